use super::*;

/// Mufasa's answer to `ch` for `GET /dir/index.html`, as RFC 2617's example computes it.
fn rfc2617_answer(ch: &Challenge, secret: &Secret) -> Result<String, DigestError> {
    let req = RequestInfo {
        method: "GET",
        uri: "/dir/index.html",
        body: b"",
    };
    authorization(ch, "Mufasa", secret, req, 1, "0a4f113b")
}

/// RFC 2617 section 3.5.
#[test]
fn rfc2617_example() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    let h = rfc2617_answer(&ch, &Secret::Password("Circle Of Life".into())).unwrap();
    assert!(
        h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
        "{h}"
    );
    assert!(h.contains("nc=00000001"));
    let parsed = Authorization::parse(&h).unwrap();
    assert!(parsed.verify(&Secret::Password("Circle Of Life".into()), "GET", b""));
    assert!(!parsed.verify(&Secret::Password("wrong".into()), "GET", b""));
}

#[test]
fn stored_ha1_answers_md5_for_its_realm_only() {
    let ha1 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
    let s = Secret::Ha1Md5 {
        realm: "testrealm@host.com".into(),
        ha1,
    };
    let ch = Challenge::parse(r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth""#).unwrap();
    let h = rfc2617_answer(&ch, &s).unwrap();
    assert!(
        h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
        "{h}"
    );
    let other = Challenge::parse(r#"Digest realm="other", nonce="n""#).unwrap();
    assert!(!s.can_answer(&other));
    assert_eq!(
        authorization(
            &other,
            "Mufasa",
            &s,
            RequestInfo {
                method: "GET",
                uri: "/",
                body: b""
            },
            1,
            "c"
        ),
        Err(DigestError::Ha1NotUsable)
    );
}

#[test]
fn nonce_count_is_eight_hex_digits() {
    let ch = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth""#).unwrap();
    let secret = Secret::Password("p".into());
    for (nc, written) in [(10, "nc=0000000a"), (255, "nc=000000ff")] {
        let req = RequestInfo {
            method: "REGISTER",
            uri: "sip:r",
            body: b"",
        };
        let h = authorization(&ch, "u", &secret, req, nc, "c").unwrap();
        assert!(h.contains(written), "{h}");
        assert!(Authorization::parse(&h)
            .unwrap()
            .verify(&secret, "REGISTER", b""));
    }
}

/// RFC 7616 section 3.9.1: the same request answered with SHA-256 and with MD5.
#[test]
fn rfc7616_sha256_and_md5_examples() {
    let password = Secret::Password("Circle of Life".into());
    let req = RequestInfo {
        method: "GET",
        uri: "/dir/index.html",
        body: b"",
    };
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    for (alg, expected) in [
        (
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ] {
        let ch = Challenge::parse(&format!(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        ))
        .unwrap();
        assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
        let h = authorization(&ch, "Mufasa", &password, req, 1, cnonce).unwrap();
        assert!(
            h.contains(&format!(r#"response="{expected}""#)),
            "{alg}: {h}"
        );
        assert!(
            h.contains("qop=auth,")
                & h.contains(r#"opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#)
        );
        let parsed = Authorization::parse(&h).unwrap();
        assert_eq!(parsed.algorithm, Algorithm::parse(alg).unwrap());
        assert!(parsed.verify(&password, "GET", b""));
        assert!(!parsed.verify(&password, "POST", b""));
    }
    // The Authorization header exactly as printed in the RFC verifies server-side.
    let rfc = Authorization::parse(
        r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
    )
    .unwrap();
    assert!(rfc.verify(&password, "GET", b""));
}

/// RFC 8760 SHA-512-256 for a SIP REGISTER, plain and `-sess`. Expected values computed
/// independently with OpenSSL (Python `hashlib.new("sha512_256")`).
#[test]
fn rfc8760_sha512_256() {
    let password = Secret::Password("s3cret".into());
    let req = RequestInfo {
        method: "REGISTER",
        uri: "sip:regmirror.test",
        body: b"",
    };
    for (alg, expected) in [
        (
            "SHA-512-256",
            "00ff8630e377a47070bbc96e532b3e05006cb6a90a4477adddecf81a8b61cc07",
        ),
        (
            "SHA-512-256-sess",
            "a0248dea2f969744241774d40097228a3dc3191f0634f8abc2ecf2b438d94bdc",
        ),
    ] {
        let ch = Challenge::parse(&format!(
            r#"Digest realm="regmirror.test", nonce="1732300000/3fc9", algorithm={alg}, qop="auth""#
        ))
        .unwrap();
        let h = authorization(&ch, "1001", &password, req, 1, "0a4f113b").unwrap();
        assert!(
            h.contains(&format!(r#"response="{expected}""#)),
            "{alg}: {h}"
        );
        assert!(Authorization::parse(&h)
            .unwrap()
            .verify(&password, "REGISTER", b""));
    }
    // A stored MD5 HA1 cannot answer SHA-512-256; `choose` then prefers a usable MD5 challenge.
    let strong = Challenge::parse(
        r#"Digest realm="regmirror.test", nonce="n", algorithm=SHA-512-256, qop="auth""#,
    )
    .unwrap();
    let md5 =
        Challenge::parse(r#"Digest realm="regmirror.test", nonce="n", algorithm=MD5, qop="auth""#)
            .unwrap();
    let ha1 = Secret::Ha1Md5 {
        realm: "regmirror.test".into(),
        ha1: ha1(Algorithm::Md5, "1001", "regmirror.test", "s3cret"),
    };
    assert_eq!(choose([&strong, &md5], &ha1), Some(&md5));
    assert_eq!(choose([&md5, &strong], &password), Some(&strong));
}

#[test]
fn multibyte_at_scheme_boundary_is_not_digest() {
    assert_eq!(
        Challenge::parse("RE\u{fffd}\u{fffd}"),
        Err(DigestError::NotDigest)
    );
    assert_eq!(
        Authorization::parse("Diges\u{e9} realm=\"r\""),
        Err(DigestError::NotDigest)
    );
    assert_eq!(
        Challenge::parse("Digest\u{e9}"),
        Err(DigestError::NotDigest)
    );
}

#[test]
fn secret_debug_is_redacted() {
    let s = format!("{:?}", Secret::Password("hunter2".into()));
    assert!(!s.contains("hunter2"));
    let s = format!(
        "{:?}",
        Secret::Ha1Md5 {
            realm: "r".into(),
            ha1: "abcdef".into()
        }
    );
    assert!(!s.contains("abcdef"));
}
