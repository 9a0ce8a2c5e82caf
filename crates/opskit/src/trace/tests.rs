use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn hostile_traceparents_are_ignored() {
    for bad in [
        "",
        "00",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ] {
        assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
    }
    assert!(parse_traceparent(VALID.as_bytes()).is_some());
    // A later version may append fields after a dash.
    let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    assert!(parse_traceparent(v1.as_bytes()).is_some());
}

/// Property test (seeded, 200,000 cases): arbitrary bytes and random
/// mutations of a valid header never panic; whatever parses has non-zero
/// ids and round-trips through the header we send.
#[test]
fn parsing_random_input_never_panics_and_round_trips() {
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..200_000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let len = rng.usize(..80);
            (0..len).map(|_| rng.u8(..)).collect()
        } else {
            let mut v = VALID.as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                match rng.u8(..3) {
                    0 => {
                        let at = rng.usize(..v.len());
                        v[at] = b"0123456789abcdefABCDEF-xz \x00\xff"[rng.usize(..27)];
                    }
                    1 if v.len() > 1 => {
                        v.remove(rng.usize(..v.len()));
                    }
                    _ => {
                        let at = rng.usize(..=v.len());
                        v.insert(at, rng.u8(..));
                    }
                }
            }
            v
        };
        if let Some((t, p, f)) = parse_traceparent(&input) {
            assert!(t != 0 && p != 0);
            let cx = TraceContext {
                trace_id: t,
                span_id: p,
                parent_span_id: None,
                flags: f,
                tracestate: None,
                baggage: None,
                propagate: true,
                linked: None,
            };
            assert_eq!(cx.traceparent(), format!("00-{t:032x}-{p:016x}-{f:02x}"));
            assert_eq!(
                parse_traceparent(cx.traceparent().as_bytes()),
                Some((t, p, f))
            );
        }
        let cx = TraceContext::from_headers(Some(&input), Some(&input));
        assert_eq!(cx.trace_id_hex().len(), 32);
        assert!(cx.tracestate().is_none_or(|s| s.len() <= MAX_TRACESTATE));
    }
}

#[test]
fn sampling_follows_the_parent_or_the_trace_id_ratio() {
    let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let sampled = VALID.as_bytes();
    let on = Sampler::default();
    let off = Sampler {
        parent_based: true,
        ratio: 0.0,
    };
    let strict_off = Sampler {
        parent_based: false,
        ratio: 0.0,
    };
    let p = Propagation::default();
    let from = |tp: &[u8], s| TraceContext::from_request(&lines(&[tp], &[], &[]), s, p);
    assert!(from(sampled, off).sampled(), "the caller's decision wins");
    assert!(!from(unsampled, on).sampled());
    assert!(!from(sampled, strict_off).sampled(), "not parent-based");
    assert!(!TraceContext::from_request(&TraceHeaders::default(), off, p).sampled());
    assert!(TraceContext::from_request(&TraceHeaders::default(), on, p).sampled());
    // A ratio of 1/4 samples about a quarter of new traces.
    let quarter = Sampler {
        parent_based: true,
        ratio: 0.25,
    };
    let n = (0..20_000)
        .filter(|_| TraceContext::from_request(&TraceHeaders::default(), quarter, p).sampled())
        .count();
    assert!((4_000..6_000).contains(&n), "{n}");
    // The decision is the trace id's, as OpenTelemetry's TraceIdRatioBased
    // makes it (so every service decides alike): its low 64 bits, shifted
    // right once, below ratio * 2^63. For 1/4 the bound is 2^61, reached
    // at a low half of 2^62; the high 64 bits play no part.
    let high = 0x4bf9_2f35_77b3_4da6_u128 << 64;
    for (low, sampled) in [
        (0u64, true),
        ((1 << 62) - 2, true),
        ((1 << 62) - 1, true),
        (1 << 62, false),
        (0xa3ce_929d_0e0e_4736, false),
        (0x1fff_ffff_ffff_ffff, true),
        (u64::MAX, false),
    ] {
        for id in [u128::from(low), high | u128::from(low)] {
            assert_eq!(quarter.samples_root(id), sampled, "{id:032x}");
        }
    }
    let half = Sampler {
        parent_based: true,
        ratio: 0.5,
    };
    assert!(half.samples_root(0x7fff_ffff_ffff_ffff));
    assert!(!half.samples_root(0x8000_0000_0000_0000));
    assert!(on.samples_root(u128::MAX) && !off.samples_root(0));
}

#[test]
fn propagators_choose_what_is_read() {
    let none = Propagation {
        trace_context: false,
        baggage: false,
        ..Propagation::default()
    };
    let cx = TraceContext::from_request(
        &lines(&[VALID.as_bytes()], &[], &[b"userId=alice"]),
        Sampler::default(),
        none,
    );
    assert!(cx.parent_span_id_hex().is_none(), "traceparent not read");
    assert!(cx.baggage().is_none());
    let both = Propagation {
        trace_context: true,
        baggage: true,
        ..Propagation::default()
    };
    let cx = TraceContext::from_request(
        &lines(
            &[VALID.as_bytes()],
            &[],
            &[b"userId=alice,isProduction=false"],
        ),
        Sampler::default(),
        both,
    );
    assert_eq!(cx.baggage(), Some("userId=alice,isProduction=false"));
    let mut h = http::HeaderMap::new();
    {
        let _entered = Entered::enter(&cx);
        inject(&mut h);
    }
    assert_eq!(h["baggage"], "userId=alice,isProduction=false");
    let huge = format!("k={}", "v".repeat(9000));
    let many: Vec<String> = (0..181).map(|i| format!("k{i}=v")).collect();
    let many = many.join(",");
    for bad in [
        huge.as_bytes(),
        many.as_bytes(),
        b"=novalue",
        b"\x01=1",
        b"a b=1",
        b",,",
    ] {
        let cx = TraceContext::from_request(&lines(&[], &[], &[bad]), Sampler::default(), both);
        assert!(cx.baggage().is_none(), "{bad:?}");
    }
}

/// The headers of a request with these lines of each name.
fn lines<'a>(tp: &[&'a [u8]], ts: &[&'a [u8]], bg: &[&'a [u8]]) -> TraceHeaders<'a> {
    TraceHeaders {
        traceparent: tp.iter().copied().collect(),
        tracestate: ts.iter().copied().collect(),
        baggage: bg.iter().copied().collect(),
        trusted: false,
    }
}

#[test]
fn header_lines_join_and_count() {
    let none = HeaderLines::default();
    assert_eq!((none.value(), none.single(), none.count()), (None, None, 0));
    let one: HeaderLines<'_> = Some(&b"a=1"[..]).into();
    assert_eq!(
        (one.value(), one.single()),
        (Some(&b"a=1"[..]), Some(&b"a=1"[..]))
    );
    let three: HeaderLines<'_> = [&b"a=1"[..], b"", b"b=2"].into_iter().collect();
    assert_eq!(three.value(), Some(&b"a=1,,b=2"[..]));
    assert_eq!((three.single(), three.count()), (None, 3));
}

/// The W3C Trace Context test suite's cases (test/test.py), on the parser.
#[test]
fn repeated_and_invalid_trace_headers_follow_the_w3c_suite() {
    let both = Propagation {
        trace_context: true,
        baggage: true,
        ..Propagation::default()
    };
    let cx = |h: TraceHeaders<'_>| TraceContext::from_request(&h, Sampler::default(), both);
    let other = b"00-12345678901234567890123456789011-1234567890123456-01";
    // Two traceparent lines, even equal ones: a new trace, no tracestate.
    for second in [&other[..], VALID.as_bytes()] {
        let c = cx(lines(&[VALID.as_bytes(), second], &[b"foo=1"], &[]));
        assert!(c.parent_span_id_hex().is_none());
        assert_ne!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(c.tracestate().is_none());
    }
    let state = |ts: &[&[u8]]| cx(lines(&[VALID.as_bytes()], ts, &[])).tracestate;
    // Several lines are one list, in order; empty lines and members add nothing.
    assert_eq!(
        state(&[b"foo=1,bar=2", b"rojo=1,congo=2", b"", b"baz=3"]).as_deref(),
        Some("foo=1,bar=2,rojo=1,congo=2,baz=3")
    );
    assert_eq!(
        state(&[b"foo=1 \t , \t bar=2, \t baz=3"]).as_deref(),
        Some("foo=1,bar=2,baz=3")
    );
    assert!(state(&[b""]).is_none());
    let key = |n: usize| format!("{}=1", "z".repeat(n));
    let tenant = |t: usize, v: usize| format!("{}@{}=1", "t".repeat(t), "v".repeat(v));
    let members = |n: usize| -> String {
        (0..n)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let all_chars = {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|b| *b != b',' && *b != b'=')
            .map(char::from)
            .collect();
        format!("{key}={value}")
    };
    for kept in [
        key(256),
        tenant(241, 14),
        members(32),
        all_chars,
        "1abc=x".to_owned(),
        "foo= leading space".to_owned(),
    ] {
        assert_eq!(state(&[kept.as_bytes()]).as_deref(), Some(kept.as_str()));
    }
    for dropped in [
        "foo=1,foo=2".to_owned(),
        "foo=1,foo=1".to_owned(),
        "foo@=1,bar=2".to_owned(),
        "@foo=1,bar=2".to_owned(),
        "foo@@bar=1,bar=2".to_owned(),
        "foo@bar@baz=1,bar=2".to_owned(),
        "foo@1bar=1".to_owned(),
        "FOO=1".to_owned(),
        "foo.bar=1".to_owned(),
        "foo =1".to_owned(),
        "_foo=1".to_owned(),
        "foo=bar=baz".to_owned(),
        "foo=,bar=3".to_owned(),
        "foo".to_owned(),
        format!("foo={}", "v".repeat(257)),
        "foo=caf\u{e9}".to_owned(),
        key(257),
        tenant(242, 1),
        tenant(1, 15),
        members(33),
    ] {
        assert!(state(&[b"ok=1", dropped.as_bytes()]).is_none(), "{dropped}");
    }
    // Duplicates across lines too.
    assert!(state(&[b"foo=1", b"foo=2"]).is_none());
    // Baggage: an invalid member goes alone; the rest, normalized, stays.
    let bag = |bg: &[&[u8]]| cx(lines(&[], &[], bg)).baggage;
    assert_eq!(bag(&[b"a b=1,c=2"]).as_deref(), Some("c=2"));
    assert_eq!(bag(&[b"c=2", b"a b=1"]).as_deref(), Some("c=2"));
    assert_eq!(
        bag(&[b"k = v ; p ; q = 1", b"x=%20y"]).as_deref(),
        Some("k=v;p;q=1,x=%20y")
    );
    assert_eq!(bag(&[b"k=v;bad prop=1,c=2"]).as_deref(), Some("c=2"));
    assert_eq!(
        bag(&[b"k=a b,c=2"]).as_deref(),
        Some("c=2"),
        "space in a value"
    );
    assert_eq!(bag(&[b"k=,c=2"]).as_deref(), Some("k=,c=2"), "empty value");
}

#[test]
fn inject_carries_the_current_request_on() {
    let mut h = http::HeaderMap::new();
    inject(&mut h);
    assert!(h.is_empty(), "outside a request: nothing");
    let cx = TraceContext::from_headers(Some(VALID.as_bytes()), Some(b"rojo=1"));
    {
        let _entered = Entered::enter(&cx);
        inject(&mut h);
    }
    let tp = h["traceparent"].to_str().unwrap();
    assert_eq!(
        parse_traceparent(tp.as_bytes()).map(|p| p.0),
        Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736)
    );
    assert_eq!(tp, cx.traceparent());
    assert_eq!(h["tracestate"], "rojo=1");
    assert!(current().is_none(), "left again");
}

#[test]
fn tracestate_is_kept_only_when_well_formed() {
    let parent = Some(VALID.as_bytes());
    let keep =
        TraceContext::from_headers(parent, Some(b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"));
    assert_eq!(
        keep.tracestate(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );
    let big = "a=".to_owned() + &"x".repeat(600);
    assert!(TraceContext::from_headers(parent, Some(big.as_bytes()))
        .tracestate()
        .is_none());
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(
        TraceContext::from_headers(parent, Some(many.join(",").as_bytes()))
            .tracestate()
            .is_none()
    );
    assert!(TraceContext::from_headers(parent, Some(b"novalue"))
        .tracestate()
        .is_none());
    // Without a valid traceparent, tracestate is dropped too.
    assert!(TraceContext::from_headers(None, Some(b"rojo=1"))
        .tracestate()
        .is_none());
}

/// `OPSKIT_TRACE_UNTRUSTED`: a linked caller neither parents nor samples
/// the request; `link` still joins a trusted proxy, `link-all` does not.
#[test]
fn a_linked_caller_neither_parents_nor_samples() {
    let never = Sampler {
        parent_based: true,
        ratio: 0.0,
    };
    let headers = |trusted| TraceHeaders {
        trusted,
        ..lines(&[VALID.as_bytes()], &[b"congo=t61rcWkgMzE"], &[])
    };
    let with = |incoming| Propagation {
        incoming,
        ..Propagation::default()
    };
    for (incoming, trusted, joins) in [
        (IncomingTrace::Join, false, true),
        (IncomingTrace::Link, false, false),
        (IncomingTrace::Link, true, true),
        (IncomingTrace::LinkAll, true, false),
    ] {
        let cx = TraceContext::from_request(&headers(trusted), never, with(incoming));
        let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(cx.trace_id_hex() == caller, joins, "{incoming:?} {trusted}");
        assert_eq!(cx.sampled(), joins, "{incoming:?} {trusted}");
        assert_eq!(cx.parent_span_id_hex().is_some(), joins);
        assert_eq!(cx.tracestate().is_some(), joins, "no caller's tracestate");
        assert_eq!(
            cx.linked_traceparent(),
            (!joins).then(|| VALID.to_owned()),
            "{incoming:?} {trusted}"
        );
    }
}
