-- PostgreSQL twin of schema/0170_lean_holds.sql.
DROP INDEX reservations_expiry;
DROP INDEX reservations_session;
DROP INDEX reservations_instance;
