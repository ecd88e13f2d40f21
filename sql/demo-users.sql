-- Demo only: users 1001..1004 (password secret<id>) and 1005, stored hashed
-- only (md5_cred of 1005:regmirror.test:secret1005). Realm regmirror.test.
-- Production provisioning goes through `regmirror user add`.
INSERT IGNORE INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) VALUES
    ('1001', 1, 'yes', 0), ('1002', 1, 'yes', 0), ('1003', 1, 'yes', 0), ('1004', 1, 'yes', 0), ('1005', 1, 'yes', 0);
INSERT IGNORE INTO ps_auths (id, auth_type, username, realm, password) VALUES
    ('1001', 'userpass', '1001', 'regmirror.test', 'secret1001'),
    ('1002', 'userpass', '1002', 'regmirror.test', 'secret1002'),
    ('1003', 'userpass', '1003', 'regmirror.test', 'secret1003'),
    ('1004', 'userpass', '1004', 'regmirror.test', 'secret1004');
INSERT IGNORE INTO ps_auths (id, auth_type, username, realm, md5_cred) VALUES
    ('1005', 'md5', '1005', 'regmirror.test', MD5('1005:regmirror.test:secret1005'));
INSERT IGNORE INTO ps_endpoints (id, aors, auth, context, disallow, allow, direct_media, rewrite_contact,
                                 rtp_symmetric, force_rport, dtmf_mode, identify_by) VALUES
    ('1001', '1001', '1001', 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username'),
    ('1002', '1002', '1002', 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username'),
    ('1003', '1003', '1003', 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username'),
    ('1004', '1004', '1004', 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username'),
    ('1005', '1005', '1005', 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username');
