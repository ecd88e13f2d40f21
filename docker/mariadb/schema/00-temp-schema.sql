-- TEMPORARY minimal schema so the topology can run before the `db` branch lands.
-- Replaced by sql/ (sql/apply.sh) once merged. Idempotent.
CREATE TABLE IF NOT EXISTS ps_endpoints (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  transport VARCHAR(40), aors VARCHAR(2048), auth VARCHAR(255), context VARCHAR(40),
  disallow VARCHAR(200), allow VARCHAR(200), direct_media ENUM('yes','no'),
  rewrite_contact ENUM('yes','no'), rtp_symmetric ENUM('yes','no'), force_rport ENUM('yes','no'),
  callerid VARCHAR(40), identify_by VARCHAR(80)
);
CREATE TABLE IF NOT EXISTS ps_auths (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  auth_type ENUM('md5','userpass','google_oauth','digest'), nonce_lifetime INT,
  md5_cred VARCHAR(40), password VARCHAR(80), realm VARCHAR(255), username VARCHAR(40),
  KEY ps_auths_username (username)
);
CREATE TABLE IF NOT EXISTS ps_aors (
  id VARCHAR(255) NOT NULL PRIMARY KEY,
  contact VARCHAR(255), default_expiration INT, mailboxes VARCHAR(80), max_contacts INT,
  minimum_expiration INT, remove_existing ENUM('yes','no'), qualify_frequency INT,
  authenticate_qualify ENUM('yes','no'), maximum_expiration INT, outbound_proxy VARCHAR(40),
  support_path ENUM('yes','no'), qualify_timeout FLOAT, voicemail_extension VARCHAR(40),
  remove_unavailable ENUM('yes','no'), qualify_2xx_only ENUM('yes','no')
);
CREATE TABLE IF NOT EXISTS ps_domain_aliases (
  id VARCHAR(255) NOT NULL PRIMARY KEY, domain VARCHAR(80)
);
CREATE TABLE IF NOT EXISTS ps_endpoint_id_ips (
  id VARCHAR(255) NOT NULL PRIMARY KEY, endpoint VARCHAR(40), `match` VARCHAR(80),
  srv_lookups ENUM('yes','no'), match_header VARCHAR(255), match_request_uri VARCHAR(255)
);
CREATE TABLE IF NOT EXISTS version (
  table_name VARCHAR(32) NOT NULL, table_version INT UNSIGNED DEFAULT 0 NOT NULL,
  CONSTRAINT table_name_idx UNIQUE (table_name)
);
CREATE TABLE IF NOT EXISTS location (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL, contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL, path VARCHAR(512) DEFAULT NULL,
    expires DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL, q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL, cseq INT(11) DEFAULT 1 NOT NULL,
    last_modified DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL, flags INT(11) DEFAULT 0 NOT NULL,
    cflags INT(11) DEFAULT 0 NOT NULL, user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL, methods INT(11) DEFAULT NULL, instance VARCHAR(255) DEFAULT NULL,
    reg_id INT(11) DEFAULT 0 NOT NULL, server_id INT(11) DEFAULT 0 NOT NULL,
    connection_id INT(11) DEFAULT 0 NOT NULL, keepalive INT(11) DEFAULT 0 NOT NULL,
    `partition` INT(11) DEFAULT 0 NOT NULL,
    CONSTRAINT ruid_idx UNIQUE (ruid),
    KEY account_contact_idx (username, domain, contact), KEY expires_idx (expires),
    KEY connection_idx (server_id, connection_id)
);
INSERT IGNORE INTO version (table_name, table_version) VALUES ('location', 9), ('subscriber', 7);
-- Kamailio auth_db view over Asterisk's credentials (one realm for both tiers).
CREATE OR REPLACE VIEW subscriber AS
  SELECT a.username AS username, 'regmirror.test' AS domain, a.password AS password,
         MD5(CONCAT(a.username, ':regmirror.test:', a.password)) AS ha1,
         MD5(CONCAT(a.username, '@regmirror.test:regmirror.test:', a.password)) AS ha1b
  FROM ps_auths a;
-- Demo users 1001..1003 (password = "secret<id>").
INSERT IGNORE INTO ps_auths (id, auth_type, password, username, realm) VALUES
  ('1001', 'digest', 'secret1001', '1001', 'regmirror.test'),
  ('1002', 'digest', 'secret1002', '1002', 'regmirror.test'),
  ('1003', 'digest', 'secret1003', '1003', 'regmirror.test');
INSERT IGNORE INTO ps_aors (id, max_contacts, remove_existing, support_path) VALUES
  ('1001', 5, 'no', 'no'), ('1002', 5, 'no', 'no'), ('1003', 5, 'no', 'no');
INSERT IGNORE INTO ps_endpoints (id, transport, aors, auth, context, disallow, allow,
    direct_media, rewrite_contact) VALUES
  ('1001', 'transport-udp', '1001', '1001', 'phones', 'all', 'ulaw,alaw', 'no', 'no'),
  ('1002', 'transport-udp', '1002', '1002', 'phones', 'all', 'ulaw,alaw', 'no', 'no'),
  ('1003', 'transport-udp', '1003', '1003', 'phones', 'all', 'ulaw,alaw', 'no', 'no');
