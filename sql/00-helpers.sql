-- Helpers that make the schema files idempotent on MariaDB and MySQL 8 alike
-- (MySQL 8 has no ADD COLUMN IF NOT EXISTS / CREATE INDEX IF NOT EXISTS).
-- 90-cleanup.sql drops them again, so a finished apply leaves no routines behind.
DROP PROCEDURE IF EXISTS regmirror_ensure_column;
DROP PROCEDURE IF EXISTS regmirror_ensure_index;
DELIMITER //
CREATE PROCEDURE regmirror_ensure_column(IN p_table VARCHAR(64), IN p_column VARCHAR(64), IN p_ddl VARCHAR(1024))
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = DATABASE() AND table_name = p_table AND column_name = p_column) THEN
        SET @regmirror_sql = CONCAT('ALTER TABLE `', p_table, '` ADD COLUMN `', p_column, '` ', p_ddl);
        PREPARE regmirror_stmt FROM @regmirror_sql;
        EXECUTE regmirror_stmt;
        DEALLOCATE PREPARE regmirror_stmt;
        SELECT CONCAT('added column ', p_table, '.', p_column) AS regmirror_apply;
    END IF;
END //
CREATE PROCEDURE regmirror_ensure_index(IN p_table VARCHAR(64), IN p_index VARCHAR(64), IN p_columns VARCHAR(512))
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.statistics
                   WHERE table_schema = DATABASE() AND table_name = p_table AND index_name = p_index) THEN
        SET @regmirror_sql = CONCAT('CREATE INDEX `', p_index, '` ON `', p_table, '` (', p_columns, ')');
        PREPARE regmirror_stmt FROM @regmirror_sql;
        EXECUTE regmirror_stmt;
        DEALLOCATE PREPARE regmirror_stmt;
        SELECT CONCAT('added index ', p_table, '.', p_index) AS regmirror_apply;
    END IF;
END //
DELIMITER ;
