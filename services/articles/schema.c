/* schema.c — the articles database, as numbered migrations (never edit one that shipped;
 * add the next). Units are seeded by a migration so every database starts with them. */
#include "articles.h"

#include "idempotency.h"

const char *const articles_migrations[] = {
    /* 1 */
    "CREATE TABLE einheit ("
    " id INTEGER PRIMARY KEY,"
    " kuerzel TEXT NOT NULL UNIQUE,"
    " bezeichnung TEXT NOT NULL,"
    " erstellt_am TEXT NOT NULL);"
    "CREATE TABLE artikel ("
    " id INTEGER PRIMARY KEY,"
    " artikelnummer TEXT NOT NULL UNIQUE,"
    " bezeichnung TEXT NOT NULL,"
    " einheit_id INTEGER NOT NULL REFERENCES einheit(id),"
    " beschreibung TEXT,"
    " mindesthaltbarkeit_tage INTEGER CHECK (mindesthaltbarkeit_tage >= 0),"
    " status TEXT NOT NULL DEFAULT 'aktiv',"
    " version INTEGER NOT NULL DEFAULT 1,"
    " erstellt_am TEXT NOT NULL,"
    " geaendert_am TEXT);"
    "CREATE INDEX artikel_status ON artikel(status);" LM_IDEM_SCHEMA ";"
    "INSERT INTO einheit (kuerzel, bezeichnung, erstellt_am) VALUES"
    " ('kg', 'Kilogramm', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('g', 'Gramm', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('t', 'Tonne', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('l', 'Liter', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('ml', 'Milliliter', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('m', 'Meter', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('Stk', 'Stück', strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " ('Pkg', 'Packung', strftime('%Y-%m-%dT%H:%M:%SZ','now'));",
    /* 2: article ids are never reused. Without AUTOINCREMENT SQLite hands the id of a
     * deleted newest article to the next one, so a stale reference (a batch's artikel_id, a
     * cached ETag "1") would silently name another article. */
    "CREATE TABLE artikel_v2 ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " artikelnummer TEXT NOT NULL UNIQUE,"
    " bezeichnung TEXT NOT NULL,"
    " einheit_id INTEGER NOT NULL REFERENCES einheit(id),"
    " beschreibung TEXT,"
    " mindesthaltbarkeit_tage INTEGER CHECK (mindesthaltbarkeit_tage >= 0),"
    " status TEXT NOT NULL DEFAULT 'aktiv',"
    " version INTEGER NOT NULL DEFAULT 1,"
    " erstellt_am TEXT NOT NULL,"
    " geaendert_am TEXT);"
    "INSERT INTO artikel_v2 (id, artikelnummer, bezeichnung, einheit_id, beschreibung,"
    " mindesthaltbarkeit_tage, status, version, erstellt_am, geaendert_am)"
    " SELECT id, artikelnummer, bezeichnung, einheit_id, beschreibung,"
    " mindesthaltbarkeit_tage, status, version, erstellt_am, geaendert_am FROM artikel;"
    "DROP TABLE artikel;"
    "ALTER TABLE artikel_v2 RENAME TO artikel;"
    "CREATE INDEX artikel_status ON artikel(status);",
};
const size_t articles_migrations_count = sizeof articles_migrations / sizeof articles_migrations[0];
