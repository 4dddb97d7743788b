-- Batches now keep their statements' plans (see `Store::begin_batch`) and fold and read loads in the
-- statement that reads their triggers, so the function that kept its own plan has no caller.
DROP FUNCTION fold_and_read_loads(text);
