//! Findings, the score, and the two output formats (a table for people,
//! JSON for CI).

use serde_json::json;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Meets the bar.
    Pass,
    /// Works, but short of the recommendation (half the points).
    Warn,
    /// A real gap (no points).
    Fail,
    /// Not applicable here (not counted in the score).
    Skip,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    /// Stable id (`csp`, `cors-origin`, …), listed in docs/audit.md.
    pub(crate) id: &'static str,
    /// Group shown in the table.
    pub(crate) area: &'static str,
    pub(crate) status: Status,
    /// One line: what was seen.
    pub(crate) why: String,
    /// One line: what to do (empty on a pass); names the opskit setting if there is one.
    pub(crate) fix: String,
    /// Mozilla Observatory's score modifier for this result (header checks
    /// only; 0 elsewhere).
    pub(crate) observatory: i32,
}

impl Finding {
    pub(crate) fn new(id: &'static str, area: &'static str, status: Status) -> Self {
        Self {
            id,
            area,
            status,
            why: String::new(),
            fix: String::new(),
            observatory: 0,
        }
    }

    pub(crate) fn pass(id: &'static str, area: &'static str, why: impl Into<String>) -> Self {
        Self::new(id, area, Status::Pass).why(why)
    }

    pub(crate) fn warn(
        id: &'static str,
        area: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, area, Status::Warn).why(why).fix(fix)
    }

    pub(crate) fn fail(
        id: &'static str,
        area: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, area, Status::Fail).why(why).fix(fix)
    }

    pub(crate) fn skip(id: &'static str, area: &'static str, why: impl Into<String>) -> Self {
        Self::new(id, area, Status::Skip).why(why)
    }

    pub(crate) fn why(mut self, why: impl Into<String>) -> Self {
        self.why = why.into();
        self
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }

    pub(crate) fn observatory(mut self, modifier: i32) -> Self {
        self.observatory = modifier;
        self
    }
}

/// 0–100: a pass earns a point, a warn half, a fail none; skips are not counted.
/// No applicable check at all scores 0 (nothing was shown to be right).
pub(crate) fn score(findings: &[Finding]) -> u32 {
    let (mut earned, mut possible) = (0u32, 0u32);
    for f in findings {
        match f.status {
            Status::Pass => (earned, possible) = (earned + 2, possible + 2),
            Status::Warn => (earned, possible) = (earned + 1, possible + 2),
            Status::Fail => possible += 2,
            Status::Skip => {}
        }
    }
    if possible == 0 {
        return 0;
    }
    // Rounded down, so that one warn among many still keeps a 100 away.
    earned * 100 / possible
}

/// Mozilla Observatory's way of grading headers: start at 100, add each
/// test's modifier; bonuses count only once the score is at least 90.
pub(crate) fn observatory_score(findings: &[Finding]) -> i32 {
    let penalties: i32 = findings.iter().map(|f| f.observatory.min(0)).sum();
    let bonuses: i32 = findings.iter().map(|f| f.observatory.max(0)).sum();
    let base = 100 + penalties;
    let total = if base >= 90 { base + bonuses } else { base };
    total.max(0)
}

/// Observatory's letter for a score.
pub(crate) fn observatory_grade(score: i32) -> &'static str {
    const GRADES: &[(i32, &str)] = &[
        (100, "A+"),
        (90, "A"),
        (85, "A-"),
        (80, "B+"),
        (70, "B"),
        (65, "B-"),
        (60, "C+"),
        (50, "C"),
        (45, "C-"),
        (40, "D+"),
        (30, "D"),
        (25, "D-"),
    ];
    GRADES
        .iter()
        .find(|(min, _)| score >= *min)
        .map_or("F", |(_, g)| g)
}

/// The human table: one row per finding, then the score line.
pub(crate) fn table(target: &str, findings: &[Finding]) -> String {
    let mut out = format!("opskit-audit {target}\n\n");
    let id_w = findings
        .iter()
        .map(|f| f.id.len())
        .max()
        .unwrap_or(2)
        .max(5);
    let area_w = findings
        .iter()
        .map(|f| f.area.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<4}  {:<area_w$}  {:<id_w$}  why / fix\n",
        "", "area", "check"
    ));
    for f in findings {
        let mark = match f.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!(
            "{mark:<4}  {:<area_w$}  {:<id_w$}  {}\n",
            f.area, f.id, f.why
        ));
        if !f.fix.is_empty() && f.status != Status::Pass {
            out.push_str(&format!(
                "{:<4}  {:<area_w$}  {:<id_w$}  fix: {}\n",
                "", "", "", f.fix
            ));
        }
    }
    out.push_str(&summary(findings));
    out
}

fn counts(findings: &[Finding]) -> [usize; 4] {
    let mut c = [0; 4];
    for f in findings {
        c[f.status as usize] += 1;
    }
    c
}

fn summary(findings: &[Finding]) -> String {
    let [pass, warn, fail, skip] = counts(findings);
    let mut s = format!(
        "\nscore {}/100  ({pass} pass, {warn} warn, {fail} fail, {skip} skipped)\n",
        score(findings)
    );
    if findings.iter().any(|f| f.area == "headers") {
        let o = observatory_score(findings);
        s.push_str(&format!(
            "headers graded as Mozilla Observatory would: {} ({o}/100)\n",
            observatory_grade(o)
        ));
    }
    s
}

/// The JSON document for CI.
pub(crate) fn json(target: &str, findings: &[Finding]) -> serde_json::Value {
    let [pass, warn, fail, skip] = counts(findings);
    let o = observatory_score(findings);
    json!({
        "target": target,
        "score": score(findings),
        "counts": {"pass": pass, "warn": warn, "fail": fail, "skip": skip},
        "observatory": {"score": o, "grade": observatory_grade(o)},
        "checks": findings.iter().map(|f| json!({
            "id": f.id,
            "area": f.area,
            "status": f.status.as_str(),
            "why": f.why,
            "fix": f.fix,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_counts_warn_as_half_and_ignores_skips() {
        let f = |s| Finding::new("x", "a", s);
        assert_eq!(score(&[f(Status::Pass), f(Status::Skip)]), 100);
        assert_eq!(score(&[f(Status::Pass), f(Status::Warn)]), 75);
        assert_eq!(score(&[f(Status::Fail), f(Status::Pass)]), 50);
        assert_eq!(score(&[f(Status::Skip)]), 0);
        // 99.x is not full marks.
        let mut many = vec![f(Status::Pass); 199];
        many.push(f(Status::Warn));
        assert_eq!(score(&many), 99);
    }

    #[test]
    fn observatory_bonuses_only_above_90() {
        let f = |m| Finding::new("x", "headers", Status::Pass).observatory(m);
        assert_eq!(observatory_score(&[f(-25), f(5)]), 75);
        assert_eq!(observatory_score(&[f(-5), f(5)]), 100);
        assert_eq!(observatory_grade(100), "A+");
        assert_eq!(observatory_grade(72), "B");
        assert_eq!(observatory_grade(10), "F");
    }

    #[test]
    fn table_and_json_carry_every_finding() {
        let findings = vec![
            Finding::pass("nosniff", "headers", "X-Content-Type-Options: nosniff"),
            Finding::fail("csp", "headers", "no CSP", "set OPSKIT_CSP").observatory(-25),
        ];
        let t = table("http://x/", &findings);
        assert!(t.contains("PASS  headers  nosniff"), "{t}");
        assert!(t.contains("fix: set OPSKIT_CSP"), "{t}");
        assert!(t.contains("score 50/100"), "{t}");
        let j = json("http://x/", &findings);
        assert_eq!(j["score"], 50);
        assert_eq!(j["checks"][1]["status"], "fail");
        assert_eq!(j["observatory"]["grade"], "B");
    }
}
