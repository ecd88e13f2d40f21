-- Views over ps_auths: the one place credentials live.
--
-- One-realm rule: an HA1 is MD5(username:realm:password), bound to its realm.
-- Kamailio challenges with the realm in ps_auths.realm and Asterisk does the
-- same, so every auth row must carry the realm both tiers use (regmirror's
-- `user add --realm`). A hashed-only credential cannot answer another realm.
--
-- Both views are SQL SECURITY DEFINER: a reader needs SELECT on the view only,
-- never on ps_auths, so plaintext passwords stay out of its reach.
-- Auths that no endpoint references (ps_endpoints.auth = ps_auths.id, one auth
-- per endpoint as realtime provisioning writes it) are left out: a removed
-- user fails authentication even if a stray auth row remains.

-- What Kamailio's auth_db reads (table "subscriber", user_column "username",
-- domain_column "domain", password_column "ha1", password_column_2 "ha1b",
-- calculate_ha1 0). Never exposes plaintext.
CREATE OR REPLACE SQL SECURITY DEFINER VIEW `subscriber` AS
SELECT
    a.`id` AS `auth_id`,
    a.`username` AS `username`,
    a.`realm` AS `domain`,
    CAST(CASE
        WHEN a.`auth_type` = 'md5' AND a.`md5_cred` IS NOT NULL AND a.`md5_cred` <> ''
            THEN LOWER(a.`md5_cred`)
        WHEN a.`password` IS NOT NULL AND a.`password` <> ''
            THEN MD5(CONCAT(a.`username`, ':', a.`realm`, ':', a.`password`))
        WHEN a.`md5_cred` IS NOT NULL AND a.`md5_cred` <> ''
            THEN LOWER(a.`md5_cred`)
        WHEN UPPER(a.`password_digest`) LIKE 'MD5:%'
            THEN LOWER(SUBSTRING(a.`password_digest`, 5))
        ELSE NULL
    END AS CHAR(64)) AS `ha1`,
    -- HA1 for a username written user@domain (auth_db's password_column_2);
    -- only derivable from plaintext.
    CAST(CASE
        WHEN a.`password` IS NOT NULL AND a.`password` <> '' AND NOT (a.`auth_type` <=> 'md5')
            THEN MD5(CONCAT(a.`username`, '@', a.`realm`, ':', a.`realm`, ':', a.`password`))
        ELSE NULL
    END AS CHAR(64)) AS `ha1b`
FROM `ps_auths` a
WHERE a.`username` IS NOT NULL
  AND a.`realm` IS NOT NULL
  AND EXISTS (SELECT 1 FROM `ps_endpoints` e WHERE e.`auth` = a.`id`);

-- What regmirror reads to answer Asterisk's challenge: plaintext when stored
-- (it answers any algorithm), else the MD5 HA1 bound to `realm`.
CREATE OR REPLACE SQL SECURITY DEFINER VIEW `regmirror_credentials` AS
SELECT
    s.`auth_id` AS `auth_id`,
    s.`username` AS `username`,
    s.`domain` AS `realm`,
    CASE WHEN a.`auth_type` <=> 'md5' THEN NULL ELSE NULLIF(a.`password`, '') END AS `password`,
    s.`ha1` AS `ha1`
FROM `subscriber` s
JOIN `ps_auths` a ON a.`id` = s.`auth_id`;
