/* schema.c — the charges database as numbered migrations per backend (never edit one that shipped).
 * Dates are kept twice: as the RFC 3339 text the API returns and as epoch milliseconds for
 * ordering (FEFO) and range filters. artikel_replica/einheit_replica hold what the articles
 * service last said, for validation while it is unreachable. */
#include "charges.h"

#include "idempotency.h"
#include "rest.h"

static const char *const charges_migrations_sqlite[] = {
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
    /* 3: events (DESIGN 3.6): the outbox, inbox and checkpoints; the batches that exist
     * already are announced once (charge.created), so a consumer starts complete */
    LM_OUTBOX_SCHEMA
    ";"
    "INSERT INTO outbox (event_id, type, subject, aggregateversion, time, data)"
    " SELECT lower(hex(randomblob(16))), 'charge.created', id, version,"
    " strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), json_object('id', id, 'artikel_id', artikel_id,"
    " 'menge', menge, 'einheit_id', einheit_id, 'herstellungsdatum', herstellungsdatum,"
    " 'mindesthaltbarkeitsdatum', mindesthaltbarkeitsdatum, 'charge_nummer', charge_nummer,"
    " 'status', status, 'bemerkungen', bemerkungen, 'erstellt_am', erstellt_am,"
    " 'geaendert_am', geaendert_am) FROM charge ORDER BY id;",
    /* 4: the series' hand_max (charge.c): at least every number of the form CH-YYYY-N…
     * already written, so a generated number above it needs no look-up */
    "ALTER TABLE nummernkreis ADD COLUMN hand_max INTEGER NOT NULL DEFAULT 0;"
    "INSERT INTO nummernkreis (jahr, naechste, hand_max)"
    " SELECT CAST(substr(charge_nummer, 4, 4) AS INTEGER), 1,"
    " max(CAST(substr(charge_nummer, 9) AS INTEGER)) FROM charge"
    " WHERE charge_nummer GLOB 'CH-[0-9][0-9][0-9][0-9]-[0-9]*' AND length(charge_nummer) <= 26"
    " GROUP BY 1 ON CONFLICT(jahr) DO UPDATE SET hand_max = excluded.hand_max;",
    /* 5: the relay's watermark instead of a mark per row (rest.h) */
    LM_OUTBOX_WATERMARK_MIGRATION ";",
};

/* PostgreSQL: the same tables; identity ids are never reused. */
static const char *const charges_migrations_pg[] = {
    /* 1 */
    "CREATE TABLE charge ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " artikel_id bigint NOT NULL,"
    " menge double precision NOT NULL CHECK (menge > 0),"
    " einheit_id bigint NOT NULL,"
    " herstellungsdatum text NOT NULL,"
    " herstellungsdatum_ms bigint NOT NULL,"
    " mindesthaltbarkeitsdatum text,"
    " mindesthaltbarkeitsdatum_ms bigint,"
    " charge_nummer text NOT NULL UNIQUE,"
    " status text NOT NULL DEFAULT 'aktiv'"
    "  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),"
    " bemerkungen text,"
    " version bigint NOT NULL DEFAULT 1,"
    " erstellt_am text NOT NULL,"
    " geaendert_am text,"
    " CHECK (mindesthaltbarkeitsdatum_ms IS NULL"
    "        OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));"
    "CREATE INDEX charge_artikel ON charge(artikel_id);"
    "CREATE INDEX charge_fefo ON charge((mindesthaltbarkeitsdatum_ms IS NULL),"
    " mindesthaltbarkeitsdatum_ms, id);"
    "CREATE INDEX charge_status ON charge(status);"
    "CREATE TABLE nummernkreis (jahr bigint PRIMARY KEY, naechste bigint NOT NULL);"
    "CREATE TABLE artikel_replica ("
    " id bigint PRIMARY KEY, artikelnummer text, einheit_id bigint,"
    " mindesthaltbarkeit_tage bigint, status text, gesehen_ms bigint NOT NULL);"
    "CREATE TABLE einheit_replica ("
    " id bigint PRIMARY KEY, kuerzel text, gesehen_ms bigint NOT NULL);" LM_IDEM_SCHEMA_PG ";",
    /* 2: events, as SQLite's 3 (identity ids were never reused: no SQLite 2 here) */
    LM_OUTBOX_SCHEMA_PG
    ";"
    "INSERT INTO outbox (event_id, type, subject, aggregateversion, time, data)"
    " SELECT md5(random()::text || clock_timestamp()::text), 'charge.created', id, version,"
    " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " json_build_object('id', id, 'artikel_id', artikel_id, 'menge', menge, 'einheit_id',"
    " einheit_id, 'herstellungsdatum', herstellungsdatum, 'mindesthaltbarkeitsdatum',"
    " mindesthaltbarkeitsdatum, 'charge_nummer', charge_nummer, 'status', status,"
    " 'bemerkungen', bemerkungen, 'erstellt_am', erstellt_am, 'geaendert_am',"
    " geaendert_am)::text FROM charge ORDER BY id;",
    /* 3: as SQLite's 4 */
    "ALTER TABLE nummernkreis ADD COLUMN hand_max bigint NOT NULL DEFAULT 0;"
    "INSERT INTO nummernkreis (jahr, naechste, hand_max)"
    " SELECT substr(charge_nummer, 4, 4)::bigint, 1, max(substr(charge_nummer, 9)::bigint)"
    " FROM charge WHERE charge_nummer ~ '^CH-[0-9]{4}-[0-9]{1,18}$'"
    " GROUP BY 1 ON CONFLICT(jahr) DO UPDATE SET hand_max = excluded.hand_max;",
    /* 4: as SQLite's 5 */
    LM_OUTBOX_WATERMARK_MIGRATION ";",
};

const lm_db_migrations charges_migrations = {
    .sqlite = charges_migrations_sqlite,
    .n_sqlite = sizeof charges_migrations_sqlite / sizeof charges_migrations_sqlite[0],
    .pg = charges_migrations_pg,
    .n_pg = sizeof charges_migrations_pg / sizeof charges_migrations_pg[0],
};
