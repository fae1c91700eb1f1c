-- Version 10, plain PostgreSQL: nothing to do. The TimescaleDB variant's (symbol, time)
-- indexes become ascending, as this variant's have been since version 2; the version is
-- shared so that both variants name the same schema.
SELECT 1;
