"""The database: tables, migrations and every SQL statement the bridge runs."""
