#ifndef CSQLITE_SHIM_H
#define CSQLITE_SHIM_H
#include <sqlite3.h>

/// sqlite3_config is variadic, which Swift cannot call: one wrapper per option used.
/// Memory statistics off: with them on, every sqlite3_malloc and sqlite3_free takes a global
/// mutex to count bytes, which nothing here reads. Must run before SQLite is initialized (the
/// first open); SQLITE_MISUSE after that.
static inline int csqlite_config_memstatus(int on) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on);
}
#endif
