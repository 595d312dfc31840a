/* schema.c — the charges database as numbered migrations (never edit one that shipped).
 * Dates are kept twice: as the RFC 3339 text the API returns and as epoch milliseconds for
 * ordering (FEFO) and range filters. artikel_replica/einheit_replica hold what the articles
 * service last said, for validation while it is unreachable. */
#include "charges.h"

#include "idempotency.h"

const char *const charges_migrations[] = {
    /* 1 */
    "CREATE TABLE charge ("
    " id INTEGER PRIMARY KEY,"
    " artikel_id INTEGER NOT NULL,"
    " menge REAL NOT NULL CHECK (menge > 0),"
    " einheit_id INTEGER NOT NULL,"
    " herstellungsdatum TEXT NOT NULL,"
    " herstellungsdatum_ms INTEGER NOT NULL,"
    " mindesthaltbarkeitsdatum TEXT,"
    " mindesthaltbarkeitsdatum_ms INTEGER,"
    " charge_nummer TEXT NOT NULL UNIQUE,"
    " status TEXT NOT NULL DEFAULT 'aktiv'"
    "  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),"
    " bemerkungen TEXT,"
    " version INTEGER NOT NULL DEFAULT 1,"
    " erstellt_am TEXT NOT NULL,"
    " geaendert_am TEXT,"
    " CHECK (mindesthaltbarkeitsdatum_ms IS NULL"
    "        OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));"
    "CREATE INDEX charge_artikel ON charge(artikel_id);"
    "CREATE INDEX charge_fefo ON charge(mindesthaltbarkeitsdatum_ms IS NULL,"
    " mindesthaltbarkeitsdatum_ms, id);"
    "CREATE INDEX charge_status ON charge(status);"
    "CREATE TABLE nummernkreis (jahr INTEGER PRIMARY KEY, naechste INTEGER NOT NULL);"
    "CREATE TABLE artikel_replica ("
    " id INTEGER PRIMARY KEY, artikelnummer TEXT, einheit_id INTEGER,"
    " mindesthaltbarkeit_tage INTEGER, status TEXT, gesehen_ms INTEGER NOT NULL);"
    "CREATE TABLE einheit_replica ("
    " id INTEGER PRIMARY KEY, kuerzel TEXT, gesehen_ms INTEGER NOT NULL);" LM_IDEM_SCHEMA ";",
    /* 2: batch ids are never reused. Without AUTOINCREMENT SQLite hands the id of a deleted
     * newest batch to the next one, so a stale reference, an If-Match or an
     * Idempotency-Key replay's Location would name another batch. */
    "CREATE TABLE charge_v2 ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " artikel_id INTEGER NOT NULL,"
    " menge REAL NOT NULL CHECK (menge > 0),"
    " einheit_id INTEGER NOT NULL,"
    " herstellungsdatum TEXT NOT NULL,"
    " herstellungsdatum_ms INTEGER NOT NULL,"
    " mindesthaltbarkeitsdatum TEXT,"
    " mindesthaltbarkeitsdatum_ms INTEGER,"
    " charge_nummer TEXT NOT NULL UNIQUE,"
    " status TEXT NOT NULL DEFAULT 'aktiv'"
    "  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),"
    " bemerkungen TEXT,"
    " version INTEGER NOT NULL DEFAULT 1,"
    " erstellt_am TEXT NOT NULL,"
    " geaendert_am TEXT,"
    " CHECK (mindesthaltbarkeitsdatum_ms IS NULL"
    "        OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));"
    "INSERT INTO charge_v2 (id, artikel_id, menge, einheit_id, herstellungsdatum,"
    " herstellungsdatum_ms, mindesthaltbarkeitsdatum, mindesthaltbarkeitsdatum_ms,"
    " charge_nummer, status, bemerkungen, version, erstellt_am, geaendert_am)"
    " SELECT id, artikel_id, menge, einheit_id, herstellungsdatum, herstellungsdatum_ms,"
    " mindesthaltbarkeitsdatum, mindesthaltbarkeitsdatum_ms, charge_nummer, status,"
    " bemerkungen, version, erstellt_am, geaendert_am FROM charge;"
    "DROP TABLE charge;"
    "ALTER TABLE charge_v2 RENAME TO charge;"
    "CREATE INDEX charge_artikel ON charge(artikel_id);"
    "CREATE INDEX charge_fefo ON charge(mindesthaltbarkeitsdatum_ms IS NULL,"
    " mindesthaltbarkeitsdatum_ms, id);"
    "CREATE INDEX charge_status ON charge(status);",
};
const size_t charges_migrations_count = sizeof charges_migrations / sizeof charges_migrations[0];
