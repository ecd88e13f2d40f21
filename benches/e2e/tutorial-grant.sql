-- DEMO ONLY, for benches/e2e/run.sh in tutorial mode: the classic Kamailio + Asterisk tutorial
-- needs each user's PLAINTEXT password in Kamailio (to answer Asterisk's challenge), which the
-- normal schema never gives the `kamailio` account (sql/40-users.sql). This view and grant are
-- applied by the benchmark only, never by sql/apply.sh; `scripts/stack down` removes them with
-- the database volume. Do not apply to a real database.
CREATE OR REPLACE SQL SECURITY DEFINER VIEW `tutorial_subscriber` AS
SELECT s.`username` AS `username`, s.`domain` AS `domain`, s.`ha1` AS `ha1`, s.`ha1b` AS `ha1b`,
       NULLIF(a.`password`, '') AS `password`
FROM `subscriber` s
JOIN `ps_auths` a ON a.`id` = s.`auth_id`;
INSERT IGNORE INTO `version` (`table_name`, `table_version`) VALUES ('tutorial_subscriber', 7);
GRANT SELECT ON `tutorial_subscriber` TO 'kamailio'@'%';
