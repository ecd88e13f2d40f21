DROP PROCEDURE IF EXISTS regmirror_ensure_column;
DROP PROCEDURE IF EXISTS regmirror_ensure_index;
