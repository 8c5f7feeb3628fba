// Settings of SQLiteNIO's bundled SQLite that Swift cannot reach: sqlite3_db_config is variadic,
// and Swift does not call variadic C functions.
#ifndef CSQLITENIO_CONFIG_H
#define CSQLITENIO_CONFIG_H

/// Sets the integer option `op` (an SQLITE_DBCONFIG_* value) of the connection `db`, a
/// `sqlite3*` of SQLiteNIO's SQLite, to `value`; returns SQLite's result code.
int cairn_sqlite_nio_db_config(void *db, int op, int value);

#endif
