// The system SQLite (Debian's libsqlite3-dev), used only by the pipeline sandbox: it needs
// sqlite3_set_authorizer, sqlite3_progress_handler and sqlite3_limit, which SQLiteNIO does not
// expose. SQLiteNIO's own copy has prefixed symbols, so the two never clash.
#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro over a function-pointer cast that Swift cannot import.
static inline void (*cairn_sqlite_transient(void))(void *) { return SQLITE_TRANSIENT; }

// sqlite3_db_config is variadic, which Swift cannot call.
static inline int cairn_sqlite_db_config(sqlite3 *db, int op, int value) {
    return sqlite3_db_config(db, op, value, (int *)0);
}

// sqlite3_config is variadic too: memory statistics off, which saves a mutex per allocation.
static inline int cairn_sqlite_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

// Memory statistics on: the sandbox process needs them for sqlite3_hard_heap_limit64, which
// SQLite enforces only while it counts its allocations.
static inline int cairn_sqlite_enable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1);
}
