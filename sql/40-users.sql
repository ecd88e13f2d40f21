-- Database users with least privilege. Adapt freely: nothing else depends on
-- this file. apply.sh sets the session variables from the environment:
--   @regmirror_user_host                 REGMIRROR_DB_USER_HOST (default '%')
--   @kamailio_pw, @asterisk_pw,          REGMIRROR_DB_KAMAILIO_PASSWORD, ..._ASTERISK_...,
--   @regmirror_pw, @provisioner_pw       ..._REGMIRROR_..., ..._PROVISIONER_PASSWORD
-- A user whose password variable is NULL is left alone (not created).
-- Grants name tables of the current database only.

DROP PROCEDURE IF EXISTS regmirror_ensure_user;
DROP PROCEDURE IF EXISTS regmirror_grant;
DELIMITER //
CREATE PROCEDURE regmirror_ensure_user(IN p_user VARCHAR(80), IN p_password VARCHAR(512))
BEGIN
    IF p_password IS NOT NULL THEN
        SET @regmirror_sql = CONCAT('CREATE USER IF NOT EXISTS ', QUOTE(p_user), '@', QUOTE(@regmirror_user_host),
                                    ' IDENTIFIED BY ', QUOTE(p_password));
        PREPARE regmirror_stmt FROM @regmirror_sql;
        EXECUTE regmirror_stmt;
        -- a changed password in the environment takes effect on the next apply
        SET @regmirror_sql = CONCAT('ALTER USER ', QUOTE(p_user), '@', QUOTE(@regmirror_user_host),
                                    ' IDENTIFIED BY ', QUOTE(p_password));
        PREPARE regmirror_stmt FROM @regmirror_sql;
        EXECUTE regmirror_stmt;
        DEALLOCATE PREPARE regmirror_stmt;
        SET @regmirror_sql = NULL;
    END IF;
END //
CREATE PROCEDURE regmirror_grant(IN p_privs VARCHAR(200), IN p_table VARCHAR(64), IN p_user VARCHAR(80), IN p_password VARCHAR(512))
BEGIN
    IF p_password IS NOT NULL THEN
        SET @regmirror_sql = CONCAT('GRANT ', p_privs, ' ON `', DATABASE(), '`.`', p_table, '` TO ',
                                    QUOTE(p_user), '@', QUOTE(@regmirror_user_host));
        PREPARE regmirror_stmt FROM @regmirror_sql;
        EXECUTE regmirror_stmt;
        DEALLOCATE PREPARE regmirror_stmt;
    END IF;
END //
DELIMITER ;

SET @regmirror_user_host = COALESCE(@regmirror_user_host, '%');

-- kamailio: reads credentials through the view only (never ps_auths), keeps
-- its registrations in location.
CALL regmirror_ensure_user('kamailio', @kamailio_pw);
CALL regmirror_grant('SELECT', 'subscriber', 'kamailio', @kamailio_pw);
CALL regmirror_grant('SELECT', 'version', 'kamailio', @kamailio_pw);
CALL regmirror_grant('SELECT', 'dispatcher', 'kamailio', @kamailio_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'location', 'kamailio', @kamailio_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'location_attrs', 'kamailio', @kamailio_pw);

-- asterisk: PJSIP realtime reads every ps_* table it maps and writes contacts
-- (and subscription persistence, when mapped).
CALL regmirror_ensure_user('asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_endpoints', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_auths', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_aors', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_endpoint_id_ips', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_domain_aliases', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_systems', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_globals', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_transports', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_registrations', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_outbound_publishes', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_inbound_publications', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_asterisk_publications', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT', 'ps_resource_list', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'ps_contacts', 'asterisk', @asterisk_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'ps_subscription_persistence', 'asterisk', @asterisk_pw);

-- regmirror: credentials (through its view), which users exist, and Kamailio's
-- registrations for reconciliation.
CALL regmirror_ensure_user('regmirror', @regmirror_pw);
CALL regmirror_grant('SELECT', 'regmirror_credentials', 'regmirror', @regmirror_pw);
CALL regmirror_grant('SELECT', 'ps_endpoints', 'regmirror', @regmirror_pw);
CALL regmirror_grant('SELECT', 'location', 'regmirror', @regmirror_pw);
-- the farm list (node_list.source = "database"), the same rows Kamailio's dispatcher reads
CALL regmirror_grant('SELECT', 'dispatcher', 'regmirror', @regmirror_pw);

-- provisioner: `regmirror user ...` writes the endpoint, auth and AOR rows;
-- `regmirror node add | remove` the farm list.
CALL regmirror_ensure_user('provisioner', @provisioner_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'dispatcher', 'provisioner', @provisioner_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'ps_endpoints', 'provisioner', @provisioner_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'ps_auths', 'provisioner', @provisioner_pw);
CALL regmirror_grant('SELECT, INSERT, UPDATE, DELETE', 'ps_aors', 'provisioner', @provisioner_pw);
CALL regmirror_grant('SELECT', 'location', 'provisioner', @provisioner_pw);

DROP PROCEDURE IF EXISTS regmirror_ensure_user;
DROP PROCEDURE IF EXISTS regmirror_grant;
SET @kamailio_pw = NULL, @asterisk_pw = NULL, @regmirror_pw = NULL, @provisioner_pw = NULL;
