-- Asterisk 22 PJSIP realtime tables, as Asterisk's own alembic migrations
-- (contrib/ast-db-manage, "config" branch) leave them at the 22.x head: the
-- revision chain through abdc9ede147d (ps_auths.password_digest, 22.2), plus the
-- later additive columns (ps_endpoints tos_text/cos_text/max_text_streams and
-- follow_redirect_methods, ps_systems taskpool_*, ps_globals rfc7329_enable).
-- Extra NULL columns are harmless: Asterisk's realtime drivers skip NULL values.
--
-- Empty database: every table is created as alembic would.
-- Existing database (from alembic or an older copy of this file): tables that
-- exist are left alone and only missing columns are added (listed on output).
-- If alembic manages your ps_* tables, run `alembic upgrade head` first; this
-- file then finds nothing missing and alembic stays in charge of them.
--
-- Types and index names mirror alembic's, including UNIQUE(id) plus the
-- redundant <table>_id index, so an alembic-made database and this one match.

CREATE TABLE IF NOT EXISTS `ps_endpoints` (
  `id` varchar(255) NOT NULL,
  `transport` varchar(40) DEFAULT NULL,
  `aors` varchar(2048) DEFAULT NULL,
  `auth` varchar(255) DEFAULT NULL,
  `context` varchar(40) DEFAULT NULL,
  `disallow` varchar(200) DEFAULT NULL,
  `allow` varchar(200) DEFAULT NULL,
  `direct_media` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `connected_line_method` enum('invite','reinvite','update') DEFAULT NULL,
  `direct_media_method` enum('invite','reinvite','update') DEFAULT NULL,
  `direct_media_glare_mitigation` enum('none','outgoing','incoming') DEFAULT NULL,
  `disable_direct_media_on_nat` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `dtmf_mode` enum('rfc4733','inband','info','auto','auto_info') DEFAULT NULL,
  `external_media_address` varchar(40) DEFAULT NULL,
  `force_rport` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `ice_support` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `identify_by` varchar(80) DEFAULT NULL,
  `mailboxes` varchar(40) DEFAULT NULL,
  `moh_suggest` varchar(40) DEFAULT NULL,
  `outbound_auth` varchar(255) DEFAULT NULL,
  `outbound_proxy` varchar(255) DEFAULT NULL,
  `rewrite_contact` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `rtp_ipv6` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `rtp_symmetric` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_diversion` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_pai` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_rpid` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `timers_min_se` int(11) DEFAULT NULL,
  `timers` enum('forced','no','required','yes') DEFAULT NULL,
  `timers_sess_expires` int(11) DEFAULT NULL,
  `callerid` varchar(40) DEFAULT NULL,
  `callerid_privacy` enum('allowed_not_screened','allowed_passed_screened','allowed_failed_screened','allowed','prohib_not_screened','prohib_passed_screened','prohib_failed_screened','prohib','unavailable') DEFAULT NULL,
  `callerid_tag` varchar(40) DEFAULT NULL,
  `100rel` enum('no','required','peer_supported','yes') DEFAULT NULL,
  `aggregate_mwi` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `trust_id_inbound` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `trust_id_outbound` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `use_ptime` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `use_avpf` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `media_encryption` enum('no','sdes','dtls') DEFAULT NULL,
  `inband_progress` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `call_group` varchar(40) DEFAULT NULL,
  `pickup_group` varchar(40) DEFAULT NULL,
  `named_call_group` varchar(40) DEFAULT NULL,
  `named_pickup_group` varchar(40) DEFAULT NULL,
  `device_state_busy_at` int(11) DEFAULT NULL,
  `fax_detect` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `t38_udptl` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `t38_udptl_ec` enum('none','fec','redundancy') DEFAULT NULL,
  `t38_udptl_maxdatagram` int(11) DEFAULT NULL,
  `t38_udptl_nat` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `t38_udptl_ipv6` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `tone_zone` varchar(40) DEFAULT NULL,
  `language` varchar(40) DEFAULT NULL,
  `one_touch_recording` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `record_on_feature` varchar(40) DEFAULT NULL,
  `record_off_feature` varchar(40) DEFAULT NULL,
  `rtp_engine` varchar(40) DEFAULT NULL,
  `allow_transfer` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `allow_subscribe` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `sdp_owner` varchar(40) DEFAULT NULL,
  `sdp_session` varchar(40) DEFAULT NULL,
  `tos_audio` varchar(10) DEFAULT NULL,
  `tos_video` varchar(10) DEFAULT NULL,
  `sub_min_expiry` int(11) DEFAULT NULL,
  `from_domain` varchar(40) DEFAULT NULL,
  `from_user` varchar(40) DEFAULT NULL,
  `mwi_from_user` varchar(40) DEFAULT NULL,
  `dtls_verify` varchar(40) DEFAULT NULL,
  `dtls_rekey` varchar(40) DEFAULT NULL,
  `dtls_cert_file` varchar(200) DEFAULT NULL,
  `dtls_private_key` varchar(200) DEFAULT NULL,
  `dtls_cipher` varchar(200) DEFAULT NULL,
  `dtls_ca_file` varchar(200) DEFAULT NULL,
  `dtls_ca_path` varchar(200) DEFAULT NULL,
  `dtls_setup` enum('active','passive','actpass') DEFAULT NULL,
  `srtp_tag_32` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `media_address` varchar(40) DEFAULT NULL,
  `redirect_method` enum('user','uri_core','uri_pjsip') DEFAULT NULL,
  `set_var` text DEFAULT NULL,
  `cos_audio` int(11) DEFAULT NULL,
  `cos_video` int(11) DEFAULT NULL,
  `message_context` varchar(40) DEFAULT NULL,
  `force_avp` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `media_use_received_transport` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `accountcode` varchar(80) DEFAULT NULL,
  `user_eq_phone` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `moh_passthrough` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `media_encryption_optimistic` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `rpid_immediate` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `g726_non_standard` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `rtp_keepalive` int(11) DEFAULT NULL,
  `rtp_timeout` int(11) DEFAULT NULL,
  `rtp_timeout_hold` int(11) DEFAULT NULL,
  `bind_rtp_to_media_address` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `voicemail_extension` varchar(40) DEFAULT NULL,
  `mwi_subscribe_replaces_unsolicited` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `deny` varchar(95) DEFAULT NULL,
  `permit` varchar(95) DEFAULT NULL,
  `acl` varchar(40) DEFAULT NULL,
  `contact_deny` varchar(95) DEFAULT NULL,
  `contact_permit` varchar(95) DEFAULT NULL,
  `contact_acl` varchar(40) DEFAULT NULL,
  `subscribe_context` varchar(40) DEFAULT NULL,
  `fax_detect_timeout` int(11) DEFAULT NULL,
  `contact_user` varchar(80) DEFAULT NULL,
  `preferred_codec_only` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `asymmetric_rtp_codec` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `rtcp_mux` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `allow_overlap` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `refer_blind_progress` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `notify_early_inuse_ringing` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `max_audio_streams` int(11) DEFAULT NULL,
  `max_video_streams` int(11) DEFAULT NULL,
  `webrtc` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `dtls_fingerprint` enum('SHA-1','SHA-256') DEFAULT NULL,
  `incoming_mwi_mailbox` varchar(40) DEFAULT NULL,
  `bundle` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `dtls_auto_generate_cert` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `follow_early_media_fork` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `accept_multiple_sdp_answers` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `suppress_q850_reason_headers` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `trust_connected_line` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_connected_line` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `ignore_183_without_sdp` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `codec_prefs_incoming_offer` varchar(128) DEFAULT NULL,
  `codec_prefs_outgoing_offer` varchar(128) DEFAULT NULL,
  `codec_prefs_incoming_answer` varchar(128) DEFAULT NULL,
  `codec_prefs_outgoing_answer` varchar(128) DEFAULT NULL,
  `stir_shaken` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_history_info` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `allow_unauthenticated_options` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `t38_bind_udptl_to_media_address` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `geoloc_incoming_call_profile` varchar(80) DEFAULT NULL,
  `geoloc_outgoing_call_profile` varchar(80) DEFAULT NULL,
  `incoming_call_offer_pref` enum('local','local_first','remote','remote_first') DEFAULT NULL,
  `outgoing_call_offer_pref` enum('local','local_merge','local_first','remote','remote_merge','remote_first') DEFAULT NULL,
  `stir_shaken_profile` varchar(80) DEFAULT NULL,
  `security_negotiation` enum('no','mediasec') DEFAULT NULL,
  `security_mechanisms` varchar(512) DEFAULT NULL,
  `send_aoc` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `overlap_context` varchar(80) DEFAULT NULL,
  `tenantid` varchar(80) DEFAULT NULL,
  `suppress_moh_on_sendonly` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `tos_text` varchar(10) DEFAULT NULL,
  `cos_text` int(11) DEFAULT NULL,
  `max_text_streams` int(11) DEFAULT NULL,
  `follow_redirect_methods` varchar(95) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_endpoints_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_auths` (
  `id` varchar(255) NOT NULL,
  `auth_type` enum('md5','userpass','google_oauth') DEFAULT NULL,
  `nonce_lifetime` int(11) DEFAULT NULL,
  `md5_cred` varchar(40) DEFAULT NULL,
  `password` varchar(80) DEFAULT NULL,
  `realm` varchar(255) DEFAULT NULL,
  `username` varchar(40) DEFAULT NULL,
  `refresh_token` varchar(255) DEFAULT NULL,
  `oauth_clientid` varchar(255) DEFAULT NULL,
  `oauth_secret` varchar(255) DEFAULT NULL,
  `password_digest` varchar(1024) DEFAULT NULL,
  `supported_algorithms_uas` varchar(1024) DEFAULT NULL,
  `supported_algorithms_uac` varchar(1024) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_auths_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_aors` (
  `id` varchar(255) NOT NULL,
  `contact` varchar(255) DEFAULT NULL,
  `default_expiration` int(11) DEFAULT NULL,
  `mailboxes` varchar(80) DEFAULT NULL,
  `max_contacts` int(11) DEFAULT NULL,
  `minimum_expiration` int(11) DEFAULT NULL,
  `remove_existing` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `qualify_frequency` int(11) DEFAULT NULL,
  `authenticate_qualify` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `maximum_expiration` int(11) DEFAULT NULL,
  `outbound_proxy` varchar(255) DEFAULT NULL,
  `support_path` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `qualify_timeout` float DEFAULT NULL,
  `voicemail_extension` varchar(40) DEFAULT NULL,
  `remove_unavailable` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `qualify_2xx_only` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_aors_id` (`id`),
  KEY `ps_aors_qualifyfreq_contact` (`qualify_frequency`,`contact`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_contacts` (
  `id` varchar(255) DEFAULT NULL,
  `uri` varchar(511) DEFAULT NULL,
  `expiration_time` bigint(20) DEFAULT NULL,
  `qualify_frequency` int(11) DEFAULT NULL,
  `outbound_proxy` varchar(255) DEFAULT NULL,
  `path` text DEFAULT NULL,
  `user_agent` varchar(255) DEFAULT NULL,
  `qualify_timeout` float DEFAULT NULL,
  `reg_server` varchar(255) DEFAULT NULL,
  `authenticate_qualify` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `via_addr` varchar(40) DEFAULT NULL,
  `via_port` int(11) DEFAULT NULL,
  `call_id` varchar(255) DEFAULT NULL,
  `endpoint` varchar(255) DEFAULT NULL,
  `prune_on_boot` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `qualify_2xx_only` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  UNIQUE KEY `ps_contacts_uq` (`id`,`reg_server`),
  KEY `ps_contacts_id` (`id`),
  KEY `ps_contacts_qualifyfreq_exp` (`qualify_frequency`,`expiration_time`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_endpoint_id_ips` (
  `id` varchar(255) NOT NULL,
  `endpoint` varchar(255) DEFAULT NULL,
  `match` varchar(80) DEFAULT NULL,
  `srv_lookups` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `match_header` varchar(255) DEFAULT NULL,
  `match_request_uri` varchar(255) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_endpoint_id_ips_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_domain_aliases` (
  `id` varchar(255) NOT NULL,
  `domain` varchar(255) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_domain_aliases_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_systems` (
  `id` varchar(40) NOT NULL,
  `timer_t1` int(11) DEFAULT NULL,
  `timer_b` int(11) DEFAULT NULL,
  `compact_headers` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `threadpool_initial_size` int(11) DEFAULT NULL,
  `threadpool_auto_increment` int(11) DEFAULT NULL,
  `threadpool_idle_timeout` int(11) DEFAULT NULL,
  `threadpool_max_size` int(11) DEFAULT NULL,
  `disable_tcp_switch` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `follow_early_media_fork` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `accept_multiple_sdp_answers` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `disable_rport` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `taskpool_minimum_size` int(11) DEFAULT NULL,
  `taskpool_initial_size` int(11) DEFAULT NULL,
  `taskpool_auto_increment` int(11) DEFAULT NULL,
  `taskpool_idle_timeout` int(11) DEFAULT NULL,
  `taskpool_max_size` int(11) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_systems_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_globals` (
  `id` varchar(40) NOT NULL,
  `max_forwards` int(11) DEFAULT NULL,
  `user_agent` varchar(255) DEFAULT NULL,
  `default_outbound_endpoint` varchar(40) DEFAULT NULL,
  `debug` varchar(40) DEFAULT NULL,
  `endpoint_identifier_order` varchar(40) DEFAULT NULL,
  `max_initial_qualify_time` int(11) DEFAULT NULL,
  `default_from_user` varchar(80) DEFAULT NULL,
  `keep_alive_interval` int(11) DEFAULT NULL,
  `regcontext` varchar(80) DEFAULT NULL,
  `contact_expiration_check_interval` int(11) DEFAULT NULL,
  `default_voicemail_extension` varchar(40) DEFAULT NULL,
  `disable_multi_domain` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `unidentified_request_count` int(11) DEFAULT NULL,
  `unidentified_request_period` int(11) DEFAULT NULL,
  `unidentified_request_prune_interval` int(11) DEFAULT NULL,
  `default_realm` varchar(40) DEFAULT NULL,
  `mwi_tps_queue_high` int(11) DEFAULT NULL,
  `mwi_tps_queue_low` int(11) DEFAULT NULL,
  `mwi_disable_initial_unsolicited` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `ignore_uri_user_options` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `use_callerid_contact` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `send_contact_status_on_update_registration` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `taskprocessor_overload_trigger` enum('none','global','pjsip_only') DEFAULT NULL,
  `norefersub` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `allow_sending_180_after_183` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `all_codecs_on_empty_reinvite` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `default_auth_algorithms_uas` varchar(1024) DEFAULT NULL,
  `default_auth_algorithms_uac` varchar(1024) DEFAULT NULL,
  `rfc7329_enable` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_globals_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_transports` (
  `id` varchar(40) NOT NULL,
  `async_operations` int(11) DEFAULT NULL,
  `bind` varchar(40) DEFAULT NULL,
  `ca_list_file` varchar(200) DEFAULT NULL,
  `cert_file` varchar(200) DEFAULT NULL,
  `cipher` varchar(200) DEFAULT NULL,
  `domain` varchar(40) DEFAULT NULL,
  `external_media_address` varchar(40) DEFAULT NULL,
  `external_signaling_address` varchar(40) DEFAULT NULL,
  `external_signaling_port` int(11) DEFAULT NULL,
  `method` enum('default','unspecified','tlsv1','tlsv1_1','tlsv1_2','tlsv1_3','sslv2','sslv23','sslv3') DEFAULT NULL,
  `local_net` varchar(40) DEFAULT NULL,
  `password` varchar(40) DEFAULT NULL,
  `priv_key_file` varchar(200) DEFAULT NULL,
  `protocol` enum('udp','tcp','tls','ws','wss','flow') DEFAULT NULL,
  `require_client_cert` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `verify_client` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `verify_server` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `tos` varchar(10) DEFAULT NULL,
  `cos` int(11) DEFAULT NULL,
  `allow_reload` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `symmetric_transport` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `allow_wildcard_certs` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `tcp_keepalive_enable` tinyint(1) DEFAULT NULL,
  `tcp_keepalive_idle_time` int(11) DEFAULT NULL,
  `tcp_keepalive_interval_time` int(11) DEFAULT NULL,
  `tcp_keepalive_probe_count` int(11) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_transports_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_registrations` (
  `id` varchar(255) NOT NULL,
  `auth_rejection_permanent` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `client_uri` varchar(255) DEFAULT NULL,
  `contact_user` varchar(40) DEFAULT NULL,
  `expiration` int(11) DEFAULT NULL,
  `max_retries` int(11) DEFAULT NULL,
  `outbound_auth` varchar(255) DEFAULT NULL,
  `outbound_proxy` varchar(255) DEFAULT NULL,
  `retry_interval` int(11) DEFAULT NULL,
  `forbidden_retry_interval` int(11) DEFAULT NULL,
  `server_uri` varchar(255) DEFAULT NULL,
  `transport` varchar(40) DEFAULT NULL,
  `support_path` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `fatal_retry_interval` int(11) DEFAULT NULL,
  `line` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `endpoint` varchar(255) DEFAULT NULL,
  `support_outbound` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `contact_header_params` varchar(255) DEFAULT NULL,
  `max_random_initial_delay` int(11) DEFAULT NULL,
  `security_negotiation` enum('no','mediasec') DEFAULT NULL,
  `security_mechanisms` varchar(512) DEFAULT NULL,
  `user_agent` varchar(255) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_registrations_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_subscription_persistence` (
  `id` varchar(40) NOT NULL,
  `packet` varchar(2048) DEFAULT NULL,
  `src_name` varchar(128) DEFAULT NULL,
  `src_port` int(11) DEFAULT NULL,
  `transport_key` varchar(64) DEFAULT NULL,
  `local_name` varchar(128) DEFAULT NULL,
  `local_port` int(11) DEFAULT NULL,
  `cseq` int(11) DEFAULT NULL,
  `tag` varchar(128) DEFAULT NULL,
  `endpoint` varchar(40) DEFAULT NULL,
  `expires` int(11) DEFAULT NULL,
  `contact_uri` varchar(256) DEFAULT NULL,
  `prune_on_boot` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `generator_data` text DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_subscription_persistence_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_outbound_publishes` (
  `id` varchar(255) NOT NULL,
  `expiration` int(11) DEFAULT NULL,
  `outbound_auth` varchar(255) DEFAULT NULL,
  `outbound_proxy` varchar(256) DEFAULT NULL,
  `server_uri` varchar(256) DEFAULT NULL,
  `from_uri` varchar(256) DEFAULT NULL,
  `to_uri` varchar(256) DEFAULT NULL,
  `event` varchar(40) DEFAULT NULL,
  `max_auth_attempts` int(11) DEFAULT NULL,
  `transport` varchar(40) DEFAULT NULL,
  `multi_user` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `@body` varchar(40) DEFAULT NULL,
  `@context` varchar(256) DEFAULT NULL,
  `@exten` varchar(256) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_outbound_publishes_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_inbound_publications` (
  `id` varchar(255) NOT NULL,
  `endpoint` varchar(255) DEFAULT NULL,
  `event_asterisk-devicestate` varchar(40) DEFAULT NULL,
  `event_asterisk-mwi` varchar(40) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_inbound_publications_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_asterisk_publications` (
  `id` varchar(40) NOT NULL,
  `devicestate_publish` varchar(40) DEFAULT NULL,
  `mailboxstate_publish` varchar(40) DEFAULT NULL,
  `device_state` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `device_state_filter` varchar(256) DEFAULT NULL,
  `mailbox_state` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `mailbox_state_filter` varchar(256) DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_asterisk_publications_id` (`id`)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `ps_resource_list` (
  `id` varchar(40) NOT NULL,
  `list_item` varchar(2048) DEFAULT NULL,
  `event` varchar(40) DEFAULT NULL,
  `full_state` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  `notification_batch_interval` int(11) DEFAULT NULL,
  `resource_display_name` enum('0','1','off','on','false','true','no','yes') DEFAULT NULL,
  UNIQUE KEY `id` (`id`),
  KEY `ps_resource_list_id` (`id`)
) ENGINE=InnoDB;

-- Bring an existing (older) database up to the same columns.
CALL regmirror_ensure_column('ps_endpoints', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_endpoints', 'transport', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'aors', 'varchar(2048) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'auth', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'context', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'disallow', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'allow', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'direct_media', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'connected_line_method', 'enum(''invite'',''reinvite'',''update'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'direct_media_method', 'enum(''invite'',''reinvite'',''update'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'direct_media_glare_mitigation', 'enum(''none'',''outgoing'',''incoming'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'disable_direct_media_on_nat', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtmf_mode', 'enum(''rfc4733'',''inband'',''info'',''auto'',''auto_info'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'external_media_address', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'force_rport', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'ice_support', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'identify_by', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'mailboxes', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'moh_suggest', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'outbound_auth', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'outbound_proxy', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rewrite_contact', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_ipv6', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_symmetric', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_diversion', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_pai', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_rpid', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'timers_min_se', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'timers', 'enum(''forced'',''no'',''required'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'timers_sess_expires', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'callerid', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'callerid_privacy', 'enum(''allowed_not_screened'',''allowed_passed_screened'',''allowed_failed_screened'',''allowed'',''prohib_not_screened'',''prohib_passed_screened'',''prohib_failed_screened'',''prohib'',''unavailable'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'callerid_tag', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', '100rel', 'enum(''no'',''required'',''peer_supported'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'aggregate_mwi', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'trust_id_inbound', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'trust_id_outbound', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'use_ptime', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'use_avpf', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'media_encryption', 'enum(''no'',''sdes'',''dtls'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'inband_progress', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'call_group', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'pickup_group', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'named_call_group', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'named_pickup_group', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'device_state_busy_at', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'fax_detect', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_udptl', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_udptl_ec', 'enum(''none'',''fec'',''redundancy'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_udptl_maxdatagram', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_udptl_nat', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_udptl_ipv6', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'tone_zone', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'language', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'one_touch_recording', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'record_on_feature', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'record_off_feature', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_engine', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'allow_transfer', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'allow_subscribe', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'sdp_owner', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'sdp_session', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'tos_audio', 'varchar(10) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'tos_video', 'varchar(10) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'sub_min_expiry', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'from_domain', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'from_user', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'mwi_from_user', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_verify', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_rekey', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_cert_file', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_private_key', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_cipher', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_ca_file', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_ca_path', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_setup', 'enum(''active'',''passive'',''actpass'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'srtp_tag_32', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'media_address', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'redirect_method', 'enum(''user'',''uri_core'',''uri_pjsip'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'set_var', 'text NULL');
CALL regmirror_ensure_column('ps_endpoints', 'cos_audio', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'cos_video', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'message_context', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'force_avp', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'media_use_received_transport', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'accountcode', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'user_eq_phone', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'moh_passthrough', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'media_encryption_optimistic', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rpid_immediate', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'g726_non_standard', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_keepalive', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_timeout', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtp_timeout_hold', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'bind_rtp_to_media_address', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'voicemail_extension', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'mwi_subscribe_replaces_unsolicited', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'deny', 'varchar(95) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'permit', 'varchar(95) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'acl', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'contact_deny', 'varchar(95) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'contact_permit', 'varchar(95) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'contact_acl', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'subscribe_context', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'fax_detect_timeout', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'contact_user', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'preferred_codec_only', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'asymmetric_rtp_codec', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'rtcp_mux', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'allow_overlap', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'refer_blind_progress', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'notify_early_inuse_ringing', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'max_audio_streams', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'max_video_streams', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'webrtc', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_fingerprint', 'enum(''SHA-1'',''SHA-256'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'incoming_mwi_mailbox', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'bundle', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'dtls_auto_generate_cert', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'follow_early_media_fork', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'accept_multiple_sdp_answers', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'suppress_q850_reason_headers', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'trust_connected_line', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_connected_line', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'ignore_183_without_sdp', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'codec_prefs_incoming_offer', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'codec_prefs_outgoing_offer', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'codec_prefs_incoming_answer', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'codec_prefs_outgoing_answer', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'stir_shaken', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_history_info', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'allow_unauthenticated_options', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 't38_bind_udptl_to_media_address', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'geoloc_incoming_call_profile', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'geoloc_outgoing_call_profile', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'incoming_call_offer_pref', 'enum(''local'',''local_first'',''remote'',''remote_first'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'outgoing_call_offer_pref', 'enum(''local'',''local_merge'',''local_first'',''remote'',''remote_merge'',''remote_first'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'stir_shaken_profile', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'security_negotiation', 'enum(''no'',''mediasec'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'security_mechanisms', 'varchar(512) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'send_aoc', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'overlap_context', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'tenantid', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'suppress_moh_on_sendonly', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoints', 'tos_text', 'varchar(10) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'cos_text', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'max_text_streams', 'int(11) NULL');
CALL regmirror_ensure_column('ps_endpoints', 'follow_redirect_methods', 'varchar(95) NULL');
CALL regmirror_ensure_column('ps_auths', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_auths', 'auth_type', 'enum(''md5'',''userpass'',''google_oauth'') NULL');
CALL regmirror_ensure_column('ps_auths', 'nonce_lifetime', 'int(11) NULL');
CALL regmirror_ensure_column('ps_auths', 'md5_cred', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_auths', 'password', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_auths', 'realm', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_auths', 'username', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_auths', 'refresh_token', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_auths', 'oauth_clientid', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_auths', 'oauth_secret', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_auths', 'password_digest', 'varchar(1024) NULL');
CALL regmirror_ensure_column('ps_auths', 'supported_algorithms_uas', 'varchar(1024) NULL');
CALL regmirror_ensure_column('ps_auths', 'supported_algorithms_uac', 'varchar(1024) NULL');
CALL regmirror_ensure_column('ps_aors', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_aors', 'contact', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_aors', 'default_expiration', 'int(11) NULL');
CALL regmirror_ensure_column('ps_aors', 'mailboxes', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_aors', 'max_contacts', 'int(11) NULL');
CALL regmirror_ensure_column('ps_aors', 'minimum_expiration', 'int(11) NULL');
CALL regmirror_ensure_column('ps_aors', 'remove_existing', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_aors', 'qualify_frequency', 'int(11) NULL');
CALL regmirror_ensure_column('ps_aors', 'authenticate_qualify', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_aors', 'maximum_expiration', 'int(11) NULL');
CALL regmirror_ensure_column('ps_aors', 'outbound_proxy', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_aors', 'support_path', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_aors', 'qualify_timeout', 'float NULL');
CALL regmirror_ensure_column('ps_aors', 'voicemail_extension', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_aors', 'remove_unavailable', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_aors', 'qualify_2xx_only', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_contacts', 'id', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'uri', 'varchar(511) NULL');
CALL regmirror_ensure_column('ps_contacts', 'expiration_time', 'bigint(20) NULL');
CALL regmirror_ensure_column('ps_contacts', 'qualify_frequency', 'int(11) NULL');
CALL regmirror_ensure_column('ps_contacts', 'outbound_proxy', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'path', 'text NULL');
CALL regmirror_ensure_column('ps_contacts', 'user_agent', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'qualify_timeout', 'float NULL');
CALL regmirror_ensure_column('ps_contacts', 'reg_server', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'authenticate_qualify', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_contacts', 'via_addr', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_contacts', 'via_port', 'int(11) NULL');
CALL regmirror_ensure_column('ps_contacts', 'call_id', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'endpoint', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_contacts', 'prune_on_boot', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_contacts', 'qualify_2xx_only', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'endpoint', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'match', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'srv_lookups', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'match_header', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_endpoint_id_ips', 'match_request_uri', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_domain_aliases', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_domain_aliases', 'domain', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_systems', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_systems', 'timer_t1', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'timer_b', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'compact_headers', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_systems', 'threadpool_initial_size', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'threadpool_auto_increment', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'threadpool_idle_timeout', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'threadpool_max_size', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'disable_tcp_switch', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_systems', 'follow_early_media_fork', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_systems', 'accept_multiple_sdp_answers', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_systems', 'disable_rport', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_systems', 'taskpool_minimum_size', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'taskpool_initial_size', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'taskpool_auto_increment', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'taskpool_idle_timeout', 'int(11) NULL');
CALL regmirror_ensure_column('ps_systems', 'taskpool_max_size', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_globals', 'max_forwards', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'user_agent', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_globals', 'default_outbound_endpoint', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_globals', 'debug', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_globals', 'endpoint_identifier_order', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_globals', 'max_initial_qualify_time', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'default_from_user', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_globals', 'keep_alive_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'regcontext', 'varchar(80) NULL');
CALL regmirror_ensure_column('ps_globals', 'contact_expiration_check_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'default_voicemail_extension', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_globals', 'disable_multi_domain', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'unidentified_request_count', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'unidentified_request_period', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'unidentified_request_prune_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'default_realm', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_globals', 'mwi_tps_queue_high', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'mwi_tps_queue_low', 'int(11) NULL');
CALL regmirror_ensure_column('ps_globals', 'mwi_disable_initial_unsolicited', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'ignore_uri_user_options', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'use_callerid_contact', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'send_contact_status_on_update_registration', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'taskprocessor_overload_trigger', 'enum(''none'',''global'',''pjsip_only'') NULL');
CALL regmirror_ensure_column('ps_globals', 'norefersub', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'allow_sending_180_after_183', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'all_codecs_on_empty_reinvite', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_globals', 'default_auth_algorithms_uas', 'varchar(1024) NULL');
CALL regmirror_ensure_column('ps_globals', 'default_auth_algorithms_uac', 'varchar(1024) NULL');
CALL regmirror_ensure_column('ps_globals', 'rfc7329_enable', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_transports', 'async_operations', 'int(11) NULL');
CALL regmirror_ensure_column('ps_transports', 'bind', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'ca_list_file', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_transports', 'cert_file', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_transports', 'cipher', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_transports', 'domain', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'external_media_address', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'external_signaling_address', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'external_signaling_port', 'int(11) NULL');
CALL regmirror_ensure_column('ps_transports', 'method', 'enum(''default'',''unspecified'',''tlsv1'',''tlsv1_1'',''tlsv1_2'',''tlsv1_3'',''sslv2'',''sslv23'',''sslv3'') NULL');
CALL regmirror_ensure_column('ps_transports', 'local_net', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'password', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_transports', 'priv_key_file', 'varchar(200) NULL');
CALL regmirror_ensure_column('ps_transports', 'protocol', 'enum(''udp'',''tcp'',''tls'',''ws'',''wss'',''flow'') NULL');
CALL regmirror_ensure_column('ps_transports', 'require_client_cert', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'verify_client', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'verify_server', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'tos', 'varchar(10) NULL');
CALL regmirror_ensure_column('ps_transports', 'cos', 'int(11) NULL');
CALL regmirror_ensure_column('ps_transports', 'allow_reload', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'symmetric_transport', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'allow_wildcard_certs', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_transports', 'tcp_keepalive_enable', 'tinyint(1) NULL');
CALL regmirror_ensure_column('ps_transports', 'tcp_keepalive_idle_time', 'int(11) NULL');
CALL regmirror_ensure_column('ps_transports', 'tcp_keepalive_interval_time', 'int(11) NULL');
CALL regmirror_ensure_column('ps_transports', 'tcp_keepalive_probe_count', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_registrations', 'auth_rejection_permanent', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_registrations', 'client_uri', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'contact_user', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_registrations', 'expiration', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'max_retries', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'outbound_auth', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'outbound_proxy', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'retry_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'forbidden_retry_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'server_uri', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'transport', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_registrations', 'support_path', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_registrations', 'fatal_retry_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'line', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_registrations', 'endpoint', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'support_outbound', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_registrations', 'contact_header_params', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_registrations', 'max_random_initial_delay', 'int(11) NULL');
CALL regmirror_ensure_column('ps_registrations', 'security_negotiation', 'enum(''no'',''mediasec'') NULL');
CALL regmirror_ensure_column('ps_registrations', 'security_mechanisms', 'varchar(512) NULL');
CALL regmirror_ensure_column('ps_registrations', 'user_agent', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'packet', 'varchar(2048) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'src_name', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'src_port', 'int(11) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'transport_key', 'varchar(64) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'local_name', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'local_port', 'int(11) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'cseq', 'int(11) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'tag', 'varchar(128) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'endpoint', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'expires', 'int(11) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'contact_uri', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'prune_on_boot', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_subscription_persistence', 'generator_data', 'text NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'expiration', 'int(11) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'outbound_auth', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'outbound_proxy', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'server_uri', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'from_uri', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'to_uri', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'event', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'max_auth_attempts', 'int(11) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'transport', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', 'multi_user', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', '@body', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', '@context', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_outbound_publishes', '@exten', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_inbound_publications', 'id', 'varchar(255) NOT NULL');
CALL regmirror_ensure_column('ps_inbound_publications', 'endpoint', 'varchar(255) NULL');
CALL regmirror_ensure_column('ps_inbound_publications', 'event_asterisk-devicestate', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_inbound_publications', 'event_asterisk-mwi', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'devicestate_publish', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'mailboxstate_publish', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'device_state', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'device_state_filter', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'mailbox_state', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_asterisk_publications', 'mailbox_state_filter', 'varchar(256) NULL');
CALL regmirror_ensure_column('ps_resource_list', 'id', 'varchar(40) NOT NULL');
CALL regmirror_ensure_column('ps_resource_list', 'list_item', 'varchar(2048) NULL');
CALL regmirror_ensure_column('ps_resource_list', 'event', 'varchar(40) NULL');
CALL regmirror_ensure_column('ps_resource_list', 'full_state', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');
CALL regmirror_ensure_column('ps_resource_list', 'notification_batch_interval', 'int(11) NULL');
CALL regmirror_ensure_column('ps_resource_list', 'resource_display_name', 'enum(''0'',''1'',''off'',''on'',''false'',''true'',''no'',''yes'') NULL');

-- Kamailio's auth_db looks credentials up by username (and realm) through the
-- `subscriber` view: this index keeps that lookup off a table scan. Safe on an
-- alembic database (alembic knows nothing of it and never drops it).
CALL regmirror_ensure_index('ps_auths', 'regmirror_ps_auths_username_realm', '`username`, `realm`');
-- The view keeps only auths that an endpoint still references.
CALL regmirror_ensure_index('ps_endpoints', 'regmirror_ps_endpoints_auth', '`auth`');

-- Users' endpoints take requests only from the sources in the named ACL `regmirror` that every
-- node defines in acl.conf (regmirror's addresses; docker/asterisk/entrypoint.sh writes it from
-- REGMIRROR_ADDRS): the nodes learn phones from regmirror's REGISTERs only, and calls arrive as
-- the `kamailio` endpoint. A node without that ACL refuses users' requests (fail closed).
-- Existing rows keep their value: UPDATE ps_endpoints SET acl = 'regmirror' WHERE acl IS NULL.
ALTER TABLE `ps_endpoints` ALTER COLUMN `acl` SET DEFAULT 'regmirror';
