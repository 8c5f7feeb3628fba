#include "CSQLiteNIOConfig.h"

// SQLiteNIO compiles SQLite with its symbols prefixed `sqlite_nio_` and keeps its header to
// itself; the function is declared here as sqlite3.h declares sqlite3_db_config.
int sqlite_nio_sqlite3_db_config(void *db, int op, ...);

int cairn_sqlite_nio_db_config(void *db, int op, int value) {
    return sqlite_nio_sqlite3_db_config(db, op, value, (int *)0);
}
