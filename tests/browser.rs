//! A real browser enforces the default security headers: headless Chromium
//! loads the starters' demo page directly and framed from another origin.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{chromium_dump_dom, Kind, Starter, StaticPage};

opskit_conformance::conformance!(
    csp_blocks_the_inline_script_without_the_nonce,
    another_origin_cannot_frame_the_page,
    with_the_headers_off_the_same_checks_fail,
);

/// The text of the element with `id` in a DOM dump.
fn text_of(dom: &str, id: &str) -> String {
    let open = format!("id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in:\n{dom}"))
        + open.len();
    let end = dom[start..].find('<').unwrap() + start;
    dom[start..end].to_string()
}

fn csp_blocks_the_inline_script_without_the_nonce(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_CSP_NONCE", "true")]);
    let dom = chromium_dump_dom(&format!("http://{}/demo/page", s.addr), 2000);
    // The script carrying the request's nonce ran and installed the listener ...
    assert_eq!(text_of(&dom, "allowed"), "ran", "{dom}");
    // ... the inline one without it did not, and the browser reported why.
    assert_eq!(text_of(&dom, "inline"), "not run", "{dom}");
    assert!(text_of(&dom, "violations").contains("script-src"), "{dom}");

    // Without nonces, the default policy blocks every inline script.
    let s = Starter::spawn(kind, &[]);
    let dom = chromium_dump_dom(&format!("http://{}/demo/page", s.addr), 2000);
    assert_eq!(text_of(&dom, "allowed"), "not run", "{dom}");
    assert_eq!(text_of(&dom, "inline"), "not run", "{dom}");
}

fn another_origin_cannot_frame_the_page(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    assert_eq!(framed_by_another_origin(&s), "embed");
}

/// Who of `/demo/page` and `/demo/embed` ran when framed by another origin
/// (sorted, comma-separated; `none` when neither did).
fn framed_by_another_origin(s: &Starter) -> String {
    // Another origin (another port) frames the default page and, as the
    // control, `/demo/embed`, whose own CSP allows any framer; each frame that
    // loads posts a message to the parent, which lists who did.
    let parent = StaticPage::start(format!(
        r#"<!doctype html><html><body>
<p id="framed">none</p>
<iframe id="page" src="http://{addr}/demo/page"></iframe>
<iframe id="embed" src="http://{addr}/demo/embed"></iframe>
<script>
var seen = [];
window.addEventListener("message", function (e) {{
  var page = document.getElementById("page").contentWindow;
  var embed = document.getElementById("embed").contentWindow;
  seen.push(e.source === page ? "page" : e.source === embed ? "embed" : "other");
  document.getElementById("framed").textContent = seen.sort().join(",");
}});
</script>
</body></html>"#,
        addr = s.addr
    ));
    let dom = chromium_dump_dom(&parent.url(), 3000);
    text_of(&dom, "framed")
}

/// The control for both checks above: with `OPSKIT_SECURITY_HEADERS=false`
/// the browser runs the inline script and lets another origin frame the page.
fn with_the_headers_off_the_same_checks_fail(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_SECURITY_HEADERS", "false")]);
    let dom = chromium_dump_dom(&format!("http://{}/demo/page", s.addr), 2000);
    assert_eq!(text_of(&dom, "allowed"), "ran", "{dom}");
    assert_eq!(text_of(&dom, "inline"), "ran", "{dom}");
    assert_eq!(text_of(&dom, "violations"), "none", "{dom}");
    assert_eq!(framed_by_another_origin(&s), "embed,page");
}
