use super::*;

#[test]
fn memory_keys_differ_by_client_kind_and_policy() {
    let h = std::collections::hash_map::RandomState::new();
    let v4 = ClientKey::Ip("192.0.2.1".parse().unwrap());
    let mapped = ClientKey::Ip("::ffff:192.0.2.1".parse().unwrap());
    let header = ClientKey::Header(&[192, 0, 2, 1]);
    let custom = ClientKey::Custom("\u{c0}".to_owned());
    let keys = [&v4, &mapped, &header, &custom, &ClientKey::Unknown];
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        for index in 0..3 {
            assert!(seen.insert(k.memory_hash(index, &h)));
        }
    }
    // Each is the keyed hash of one tagged buffer: tag, the policy's
    // index (8 bytes, little-endian), then the client's bytes. The same
    // client always lands on the same key, whoever built it.
    let expected = |bytes: &[&[u8]]| {
        use std::hash::{BuildHasher, Hasher};
        let mut s = h.build_hasher();
        for b in bytes {
            s.write(b);
        }
        s.finish()
    };
    let two = 2u64.to_le_bytes();
    let mut v4_buf = vec![b'4'];
    v4_buf.extend_from_slice(&two);
    v4_buf.extend_from_slice(&[192, 0, 2, 1]);
    let again = ClientKey::Ip("192.0.2.1".parse().unwrap());
    assert_eq!(again.memory_hash(2, &h), expected(&[&v4_buf]));
    let mut v6_buf = vec![b'6'];
    v6_buf.extend_from_slice(&two);
    v6_buf.extend_from_slice(
        &"::ffff:192.0.2.1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    assert_eq!(mapped.memory_hash(2, &h), expected(&[&v6_buf]));
    let tagged = |tag: u8| {
        let mut b = vec![tag];
        b.extend_from_slice(&two);
        b
    };
    assert_eq!(
        header.memory_hash(2, &h),
        expected(&[&tagged(b'h'), &[192, 0, 2, 1]])
    );
    assert_eq!(
        ClientKey::Custom("\u{c0}".to_owned()).memory_hash(2, &h),
        expected(&[&tagged(b'c'), "\u{c0}".as_bytes()])
    );
    assert_eq!(
        ClientKey::Unknown.memory_hash(2, &h),
        expected(&[&tagged(b'u')])
    );
}

#[test]
fn decimals_are_written_as_display_writes_them() {
    for v in [0, 7, 10, 999, 1000, 65_536, u64::MAX] {
        assert_eq!(&decimal(v)[..], v.to_string().as_bytes());
    }
}

fn info<'a>(
    path: &'a str,
    peer: &str,
    header: &'a (dyn Fn(&str) -> Option<&'a [u8]> + Sync),
) -> RequestInfo<'a> {
    RequestInfo {
        method: "GET",
        path,
        client: peer.parse().ok(),
        header,
    }
}

#[test]
fn route_policies_and_exemptions() {
    let l = Limiter::new(LimitSettings {
        default: Some(Quota::parse("100/1m").unwrap()),
        routes: vec![
            RoutePolicy {
                pattern: "/auth/*".into(),
                quota: Some(Quota::parse("1/1m").unwrap()),
            },
            RoutePolicy {
                pattern: "/livez".into(),
                quota: None,
            },
        ],
        ..Default::default()
    });
    let none = |_: &str| None;
    assert_eq!(&*l.policy("/auth/login").unwrap().0, "/auth/*");
    assert!(l.policy("/livez").is_none());
    assert_eq!(&*l.policy("/users/1").unwrap().0, "default");
    assert!(
        l.check_memory(&info("/auth/login", "10.0.0.1", &none))
            .unwrap()
            .decision
            .allowed
    );
    assert!(
        !l.check_memory(&info("/auth/x", "10.0.0.1", &none))
            .unwrap()
            .decision
            .allowed
    );
    // Another client, and the default policy, are separate buckets.
    assert!(
        l.check_memory(&info("/auth/login", "10.0.0.2", &none))
            .unwrap()
            .decision
            .allowed
    );
    assert!(
        l.check_memory(&info("/users/1", "10.0.0.1", &none))
            .unwrap()
            .decision
            .allowed
    );
}

#[test]
fn a_flood_of_keys_stays_within_the_capacity() {
    let l = Limiter::new(LimitSettings {
        default: Some(Quota::parse("10/1h").unwrap()),
        capacity: 10_000,
        ..Default::default()
    });
    let none = |_: &str| None;
    for i in 0..1_000_000u32 {
        let ip = std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761)).to_string();
        assert!(
            l.check_memory(&info("/", &ip, &none))
                .unwrap()
                .decision
                .allowed
        );
    }
    let keys = l.keys_in_memory();
    assert!(keys <= 10_000, "{keys} keys kept");
    assert!(keys >= 7_000, "{keys} keys kept");
}

#[test]
fn headers_follow_the_draft() {
    let c = Checked {
        decision: Decision {
            allowed: false,
            remaining: 0,
            reset_us: 11_500_000,
        },
        policy: Arc::from("default"),
        quota: Quota::parse("5/1m").unwrap(),
        store_failed: false,
        fields: (
            Bytes::from_static(b"\"default\";q=5;w=60"),
            Arc::from("\"default\";r="),
        ),
    };
    let h: Vec<(&str, Bytes)> = c.headers(true).into_iter().flatten().collect();
    assert!(h.contains(&(
        "ratelimit-policy",
        Bytes::from_static(b"\"default\";q=5;w=60")
    )));
    assert!(h.contains(&("ratelimit", Bytes::from_static(b"\"default\";r=0;t=12"))));
    assert!(h.contains(&("retry-after", Bytes::from_static(b"12"))));
    assert!(h.iter().any(|(n, _)| *n == "x-ratelimit-reset"));
    assert_eq!(c.problem().status(), 429);
    assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
}
