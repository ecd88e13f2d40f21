-- Kamailio 5.6 tables regmirror's topology needs, as Kamailio's own schema
-- (utils/kamctl/mysql: standard, usrloc, dispatcher) defines them for 5.6.
-- `subscriber` is not a table here: 30-views.sql makes it a view over ps_auths.

CREATE TABLE IF NOT EXISTS `version` (
    `table_name` VARCHAR(32) NOT NULL,
    `table_version` INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT table_name_idx UNIQUE (`table_name`)
) ENGINE=InnoDB;

-- usrloc (location version 9)
CREATE TABLE IF NOT EXISTS `location` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `ruid` VARCHAR(64) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT NULL,
    `contact` VARCHAR(512) DEFAULT '' NOT NULL,
    `received` VARCHAR(128) DEFAULT NULL,
    `path` VARCHAR(512) DEFAULT NULL,
    `expires` DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL,
    `q` FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    `callid` VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    `cseq` INT(11) DEFAULT 1 NOT NULL,
    `last_modified` DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL,
    `flags` INT(11) DEFAULT 0 NOT NULL,
    `cflags` INT(11) DEFAULT 0 NOT NULL,
    `user_agent` VARCHAR(255) DEFAULT '' NOT NULL,
    `socket` VARCHAR(64) DEFAULT NULL,
    `methods` INT(11) DEFAULT NULL,
    `instance` VARCHAR(255) DEFAULT NULL,
    `reg_id` INT(11) DEFAULT 0 NOT NULL,
    `server_id` INT(11) DEFAULT 0 NOT NULL,
    `connection_id` INT(11) DEFAULT 0 NOT NULL,
    `keepalive` INT(11) DEFAULT 0 NOT NULL,
    `partition` INT(11) DEFAULT 0 NOT NULL,
    CONSTRAINT ruid_idx UNIQUE (`ruid`)
) ENGINE=InnoDB;
CALL regmirror_ensure_index('location', 'account_contact_idx', '`username`, `domain`, `contact`');
CALL regmirror_ensure_index('location', 'expires_idx', '`expires`');
CALL regmirror_ensure_index('location', 'connection_idx', '`server_id`, `connection_id`');

CREATE TABLE IF NOT EXISTS `location_attrs` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `ruid` VARCHAR(64) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT NULL,
    `aname` VARCHAR(64) DEFAULT '' NOT NULL,
    `atype` INT(11) DEFAULT 0 NOT NULL,
    `avalue` VARCHAR(512) DEFAULT '' NOT NULL,
    `last_modified` DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL
) ENGINE=InnoDB;
CALL regmirror_ensure_index('location_attrs', 'account_record_idx', '`username`, `domain`, `ruid`');
CALL regmirror_ensure_index('location_attrs', 'last_modified_idx', '`last_modified`');

-- dispatcher: the Asterisk farm list, if Kamailio keeps it in the database
CREATE TABLE IF NOT EXISTS `dispatcher` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `setid` INT DEFAULT 0 NOT NULL,
    `destination` VARCHAR(192) DEFAULT '' NOT NULL,
    `flags` INT DEFAULT 0 NOT NULL,
    `priority` INT DEFAULT 0 NOT NULL,
    `attrs` VARCHAR(128) DEFAULT '' NOT NULL,
    `description` VARCHAR(64) DEFAULT '' NOT NULL
) ENGINE=InnoDB;

-- Kamailio checks these at start. `subscriber` = 7 although it is a view:
-- auth_db refuses to start ("invalid version 0 ... expected 7") without it.
-- INSERT IGNORE keeps whatever an existing Kamailio database already says.
INSERT IGNORE INTO `version` (`table_name`, `table_version`) VALUES
    ('version', 1),
    ('location', 9),
    ('location_attrs', 1),
    ('dispatcher', 4),
    ('subscriber', 7);
