-- Holds are only the calls in flight (a few, a few hundred at most): a scan of them costs less
-- than keeping three indexes in step, and every reserve and every record wrote those index pages
-- (3 of a reserve's 4 pages, 3 of a record's 11), in the transaction that holds the write lock.
DROP INDEX reservations_expiry;
DROP INDEX reservations_session;
DROP INDEX reservations_instance;
