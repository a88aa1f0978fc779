//! Budgets: limits in US dollars and tokens, what a task has spent against them, and the
//! prices that turn a worker's token counts into dollars while it runs.
//!
//! A CLI that reports its cost (Claude Code does, in its last stream event) reports it only
//! when its run ends; while it runs, its tokens are priced by [`Prices`] (the published list
//! prices, or the coordinator's `budgets.prices`), and the reported cost replaces the estimate
//! once it comes. Tokens against a budget are input + output + cache writes: cache reads (the
//! whole context read again every turn, at a tenth of the input price) are left out, or a
//! token budget would measure the conversation's length rather than its work.

use crate::stream::Usage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A budget's largest dollar amount ($1,000,000).
pub const MAX_USD_MICROS: u64 = 1_000_000 * 1_000_000;
/// A budget's largest token count (10^12).
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// A limit in US dollars and/or tokens; 0 in a measure: no limit in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// Millionths of a US dollar.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usd_micros: u64,
    /// Tokens (input + output + cache writes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a task or a user has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Spend {
    /// Millionths of a US dollar.
    pub usd_micros: u64,
    /// Tokens (input + output + cache writes).
    pub tokens: u64,
    /// Some of the dollars are estimated from tokens (a run still going, or a CLI that does
    /// not report its cost).
    #[serde(default)]
    pub estimated: bool,
}

impl Spend {
    /// The sum of two spends.
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            usd_micros: self.usd_micros.saturating_add(other.usd_micros),
            tokens: self.tokens.saturating_add(other.tokens),
            estimated: self.estimated || other.estimated,
        }
    }

    /// What `self` has more than `before` (each measure; never below 0).
    pub fn since(self, before: Spend) -> Spend {
        Spend {
            usd_micros: self.usd_micros.saturating_sub(before.usd_micros),
            tokens: self.tokens.saturating_sub(before.tokens),
            estimated: self.estimated,
        }
    }

    /// `$0.42 (estimated) · 12.3k tokens`, for people.
    pub fn describe(&self) -> String {
        format!(
            "{}{} · {} tokens",
            usd_text(self.usd_micros),
            if self.estimated { " (estimated)" } else { "" },
            crate::stream::tokens(self.tokens)
        )
    }
}

impl Budget {
    /// No limit in either measure.
    pub fn is_none(&self) -> bool {
        self.usd_micros == 0 && self.tokens == 0
    }

    /// Reads `$5`, `$0.50`, `5usd`, `200k`, `2M tokens`, `1500000`, or both joined by a
    /// comma (`$5, 2M`). Amounts are positive; dollars have at most 6 decimals.
    pub fn parse(text: &str) -> Result<Budget, String> {
        let mut b = Budget::default();
        let text = text.trim();
        if text.is_empty() {
            return Err("the budget is empty; give dollars (`$5`) and/or tokens (`2M`)".into());
        }
        for part in text.split(',') {
            let p = part.trim().to_ascii_lowercase();
            let dollars = p
                .strip_prefix('$')
                .or_else(|| p.strip_suffix('$'))
                .or_else(|| p.strip_suffix("usd"))
                .or_else(|| p.strip_prefix("usd"))
                .map(str::trim);
            if let Some(amount) = dollars {
                if b.usd_micros != 0 {
                    return Err(format!("`{text}` gives dollars twice"));
                }
                b.usd_micros = usd_micros(amount).map_err(|e| format!("`{}`: {e}", part.trim()))?;
            } else {
                if b.tokens != 0 {
                    return Err(format!("`{text}` gives tokens twice"));
                }
                b.tokens = token_count(&p).map_err(|e| format!("`{}`: {e}", part.trim()))?;
            }
        }
        Ok(b)
    }

    /// Whether `spend` has reached this budget in any measure it limits.
    pub fn reached_by(&self, spend: &Spend) -> bool {
        (self.usd_micros > 0 && spend.usd_micros >= self.usd_micros)
            || (self.tokens > 0 && spend.tokens >= self.tokens)
    }

    /// This budget raised by `step` from what is spent now (in each measure this budget
    /// limits: the larger of the limit and the spend, plus the step's amount).
    pub fn raised(&self, step: &Budget, spend: &Spend) -> Budget {
        let up = |limit: u64, spent: u64, step: u64, max: u64| {
            if limit == 0 {
                0
            } else {
                limit.max(spent).saturating_add(step.max(1)).min(max)
            }
        };
        Budget {
            usd_micros: up(
                self.usd_micros,
                spend.usd_micros,
                step.usd_micros,
                MAX_USD_MICROS,
            ),
            tokens: up(self.tokens, spend.tokens, step.tokens, MAX_TOKENS),
        }
    }

    /// `spend` against this budget for people: `$4.97 of $5.00`, `1.2M of 2M tokens`.
    pub fn against(&self, spend: &Spend) -> String {
        let mut parts = Vec::new();
        if self.usd_micros > 0 {
            parts.push(format!(
                "{}{} of {}",
                usd_text(spend.usd_micros),
                if spend.estimated { " (estimated)" } else { "" },
                usd_text(self.usd_micros)
            ));
        }
        if self.tokens > 0 {
            parts.push(format!(
                "{} of {} tokens",
                crate::stream::tokens(spend.tokens),
                token_text(self.tokens)
            ));
        }
        parts.join(" and ")
    }
}

impl fmt::Display for Budget {
    /// As [`Budget::parse`] reads it: `$5.00`, `2M tokens`, `$5.00, 2M tokens`; `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.usd_micros > 0 {
            parts.push(usd_text(self.usd_micros));
        }
        if self.tokens > 0 {
            parts.push(format!("{} tokens", token_text(self.tokens)));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(", "))
    }
}

/// A task's budget: its limit now, and what a "yes" to continue adds (the budget it was
/// given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskBudget {
    /// The limit now.
    pub limit: Budget,
    /// What each "continue" adds.
    pub step: Budget,
}

impl TaskBudget {
    /// A budget of `b`, raised by `b` each time.
    pub fn new(b: Budget) -> TaskBudget {
        TaskBudget { limit: b, step: b }
    }
}

/// A token's budgets: the budget of each task submitted with it (when its submit gives none)
/// and the daily budget of its user's submits made with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenBudgets {
    /// Each task's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Budget>,
    /// The user's daily budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<Budget>,
}

impl TokenBudgets {
    /// Neither is set.
    pub fn is_none(&self) -> bool {
        self.task.is_none() && self.day.is_none()
    }
}

/// Dollars for people: `$5.00`, `$0.005`, `$1234.50`.
pub fn usd_text(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac.is_multiple_of(10_000) {
        return format!("${whole}.{:02}", frac / 10_000);
    }
    let digits = format!("{frac:06}");
    format!("${whole}.{}", digits.trim_end_matches('0'))
}

/// An exact token count as [`Budget::parse`] reads it: `2M`, `200k`, `1500`.
fn token_text(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// A plain decimal (`5`, `0.50`, `.25`, at most 6 decimals) in millionths.
fn millionths(amount: &str) -> Option<u128> {
    let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    if whole.len() > 20 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: u128 = format!("{frac:0<6}").parse().ok()?;
    Some(whole * 1_000_000 + frac)
}

/// `5`, `0.50`, `12.345678` → millionths of a dollar.
fn usd_micros(amount: &str) -> Result<u64, String> {
    let micros = millionths(amount).ok_or_else(|| {
        "dollars are a number such as `5` or `0.50` (at most 6 decimals)".to_string()
    })?;
    if micros > MAX_USD_MICROS as u128 {
        return Err("more than $1,000,000".into());
    }
    if micros == 0 {
        return Err(
            "a budget of nothing would stop the task before it starts; leave it out for none"
                .into(),
        );
    }
    Ok(micros as u64)
}

/// `200k`, `2M`, `1.5m tokens`, `1500` → tokens.
fn token_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("tokens")
        .or_else(|| t.strip_suffix("token"))
        .unwrap_or(t)
        .trim();
    let (number, scale) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 1_000),
        Some(b'm') => (&t[..t.len() - 1], 1_000_000),
        Some(b'g' | b'b') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    let n = millionths(number.trim()).ok_or_else(|| {
        "not a budget: give dollars (`$5`, `5usd`) or tokens (`200k`, `2M`, `1500000`)".to_string()
    })?;
    let tokens = n.saturating_mul(scale) / 1_000_000;
    if tokens == 0 {
        return Err("a budget of no tokens would stop the task before it starts".into());
    }
    if tokens > MAX_TOKENS as u128 {
        return Err("more than 10^12 tokens".into());
    }
    Ok(tokens as u64)
}

/// A model's list price, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens (not read from the cache).
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache (default: a tenth of `input`).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Input tokens written to the prompt cache (default: 1.25 × `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Price {
        Price {
            input,
            output,
            cache_read: Some(cache_read),
            cache_write: Some(cache_write),
        }
    }

    /// What `u`'s tokens cost at this price, in millionths of a dollar.
    pub fn cost_micros(&self, u: &Usage) -> u64 {
        // Dollars per million tokens = millionths of a dollar per token.
        let micros = u.input_tokens as f64 * self.input
            + u.output_tokens as f64 * self.output
            + u.cache_read_tokens as f64 * self.cache_read.unwrap_or(self.input / 10.0)
            + u.cache_write_tokens as f64 * self.cache_write.unwrap_or(self.input * 1.25);
        if micros.is_finite() && micros > 0.0 {
            micros.ceil().min(u64::MAX as f64) as u64
        } else {
            0
        }
    }

    fn validate(&self) -> Result<(), String> {
        let all = [
            Some(self.input),
            Some(self.output),
            self.cache_read,
            self.cache_write,
        ];
        if all
            .iter()
            .flatten()
            .any(|p| !p.is_finite() || *p < 0.0 || *p > 1_000_000.0)
        {
            return Err("a price is dollars per million tokens, from 0 to 1000000".into());
        }
        Ok(())
    }
}

/// List prices by model (patterns: a model id, or a prefix followed by `*`; `*` alone for
/// any model), published by Anthropic and OpenAI (2026). A model none names is priced as
/// the dearest of them (Opus 4.1's), so an unknown model trips a dollar budget early, not
/// late; `budgets.prices` puts a right price first.
const BUILT_IN: &[(&str, Price)] = &[
    ("claude-opus-4-5*", Price::new(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-6*", Price::new(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4*", Price::new(15.0, 75.0, 1.5, 18.75)),
    ("claude-sonnet-4*", Price::new(3.0, 15.0, 0.3, 3.75)),
    ("claude-3-7-sonnet*", Price::new(3.0, 15.0, 0.3, 3.75)),
    ("claude-haiku-4*", Price::new(1.0, 5.0, 0.1, 1.25)),
    ("claude-3-5-haiku*", Price::new(0.8, 4.0, 0.08, 1.0)),
    ("gpt-5-mini*", Price::new(0.25, 2.0, 0.025, 0.0)),
    ("gpt-5-nano*", Price::new(0.05, 0.4, 0.005, 0.0)),
    ("gpt-5*", Price::new(1.25, 10.0, 0.125, 0.0)),
    ("*", Price::new(15.0, 75.0, 1.5, 18.75)),
];

/// Prices by model: the configured ones first, then the built-in list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    configured: Vec<(String, Price)>,
}

fn pattern_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

impl Prices {
    /// The built-in list with `configured` (pattern → price) before it.
    pub fn with(configured: &BTreeMap<String, Price>) -> Result<Prices, String> {
        let mut list: Vec<(String, Price)> = Vec::new();
        for (pattern, price) in configured {
            price
                .validate()
                .map_err(|e| format!("prices.{pattern}: {e}"))?;
            if pattern.is_empty() || pattern[..pattern.len() - 1].contains('*') {
                return Err(format!(
                    "prices: `{pattern}` is a model id, or a prefix followed by `*`"
                ));
            }
            list.push((pattern.clone(), *price));
        }
        // The longest (most specific) pattern first.
        list.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(Prices { configured: list })
    }

    /// The price of `model` (the first pattern that names it).
    pub fn of(&self, model: &str) -> Price {
        self.configured
            .iter()
            .map(|(p, price)| (p.as_str(), *price))
            .chain(BUILT_IN.iter().copied())
            .find(|(p, _)| pattern_matches(p, model))
            .map(|(_, price)| price)
            .unwrap_or(BUILT_IN[BUILT_IN.len() - 1].1)
    }

    /// What one worker run spent: the cost its CLI reported, or its tokens at its model's
    /// price (`fallback_model` when the stream named none).
    pub fn spend(&self, u: &Usage, fallback_model: &str) -> Spend {
        let tokens = u
            .input_tokens
            .saturating_add(u.output_tokens)
            .saturating_add(u.cache_write_tokens);
        match u.cost_usd {
            Some(c) if c.is_finite() && c >= 0.0 => Spend {
                usd_micros: (c * 1e6).round().min(u64::MAX as f64) as u64,
                tokens,
                estimated: false,
            },
            _ => {
                let model = if u.model.is_empty() {
                    fallback_model
                } else {
                    &u.model
                };
                Spend {
                    usd_micros: self.of(model).cost_micros(u),
                    tokens,
                    estimated: tokens > 0 || u.cache_read_tokens > 0,
                }
            }
        }
    }

    /// What all of a task's worker runs spent.
    pub fn task_spend<'a>(
        &self,
        runs: impl IntoIterator<Item = &'a Usage>,
        fallback_model: &str,
    ) -> Spend {
        runs.into_iter()
            .map(|u| self.spend(u, fallback_model))
            .fold(Spend::default(), Spend::plus)
    }
}

/// The `budgets:` section of a coordinator's (or the local daemon's) config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetConfig {
    /// Every task's budget when its submit gives none.
    pub task: Option<Budget>,
    /// Each user's daily budget (UTC days): a user past it cannot submit until the next day.
    pub day: Option<Budget>,
    /// Users' own daily budgets (instead of `day`).
    pub users: BTreeMap<String, Budget>,
    /// Prices that turn tokens into dollars.
    pub prices: Prices,
}

impl BudgetConfig {
    /// `user`'s daily budget (theirs, else everyone's).
    pub fn day_for(&self, user: &str) -> Option<Budget> {
        self.users.get(user).copied().or(self.day)
    }
}

/// Reads the `budgets:` section of a YAML config (absent: no budgets).
pub fn parse_section(text: &str) -> Result<BudgetConfig, String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        budgets: Option<Section>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[serde(default)]
        task: Option<String>,
        #[serde(default)]
        day: Option<String>,
        #[serde(default)]
        users: BTreeMap<String, String>,
        #[serde(default)]
        prices: BTreeMap<String, Price>,
    }
    if text.trim().is_empty() {
        return Ok(BudgetConfig::default());
    }
    let doc: Doc = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })?;
    let Some(s) = doc.budgets else {
        return Ok(BudgetConfig::default());
    };
    let read = |key: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| Budget::parse(t).map_err(|e| format!("budgets.{key}: {e}")))
            .transpose()
    };
    let mut users = BTreeMap::new();
    for (user, text) in &s.users {
        crate::limits::check_name("user", user).map_err(|e| format!("budgets.users: {e}"))?;
        users.insert(
            user.clone(),
            Budget::parse(text).map_err(|e| format!("budgets.users.{user}: {e}"))?,
        );
    }
    Ok(BudgetConfig {
        task: read("task", &s.task)?,
        day: read("day", &s.day)?,
        users,
        prices: Prices::with(&s.prices).map_err(|e| format!("budgets.{e}"))?,
    })
}

/// The UTC day `ms` falls in (days since 1970-01-01).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_people_write_them() {
        let b = |s: &str| Budget::parse(s).unwrap();
        assert_eq!(b("$5").usd_micros, 5_000_000);
        assert_eq!(b("$0.50").usd_micros, 500_000);
        assert_eq!(b("5usd").usd_micros, 5_000_000);
        assert_eq!(b("5 USD").usd_micros, 5_000_000);
        assert_eq!(b("$.25").usd_micros, 250_000);
        assert_eq!(b("$0.005").usd_micros, 5_000);
        assert_eq!(b("200k").tokens, 200_000);
        assert_eq!(b("2M tokens").tokens, 2_000_000);
        assert_eq!(b("1.5m").tokens, 1_500_000);
        assert_eq!(b("1500").tokens, 1_500);
        assert_eq!(
            b("$5, 2M"),
            Budget {
                usd_micros: 5_000_000,
                tokens: 2_000_000
            }
        );
        for bad in [
            "",
            "$",
            "$-5",
            "$0",
            "0",
            "five",
            "$5,$6",
            "2M,3M",
            "$1.0000001",
            "$1e3",
            "$99999999",
            "2T",
            "0.0001k",
        ] {
            assert!(Budget::parse(bad).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn a_budget_prints_as_it_reads() {
        for s in [
            "$5.00",
            "$0.005",
            "2M tokens",
            "200k tokens",
            "1500 tokens",
            "$5.00, 2M tokens",
        ] {
            let b = Budget::parse(s).unwrap();
            assert_eq!(b.to_string(), s);
            assert_eq!(Budget::parse(&b.to_string()).unwrap(), b);
        }
        assert_eq!(Budget::default().to_string(), "none");
    }

    #[test]
    fn reached_and_raised_from_what_is_spent() {
        let limit = Budget::parse("$5").unwrap();
        let spend = |usd: u64| Spend {
            usd_micros: usd,
            tokens: 0,
            estimated: false,
        };
        assert!(!limit.reached_by(&spend(4_999_999)));
        assert!(limit.reached_by(&spend(5_000_000)));
        // Five more from what is spent, not from the old limit.
        assert_eq!(
            limit.raised(&limit, &spend(7_000_000)).usd_micros,
            12_000_000
        );
        assert_eq!(
            limit.raised(&limit, &spend(5_000_000)).usd_micros,
            10_000_000
        );
        // A measure the budget does not limit stays unlimited.
        assert_eq!(limit.raised(&limit, &spend(5_000_000)).tokens, 0);
        assert_eq!(
            limit.against(&Spend {
                usd_micros: 4_970_000,
                tokens: 10,
                estimated: true
            }),
            "$4.97 (estimated) of $5.00"
        );
    }

    #[test]
    fn a_reported_cost_wins_over_the_estimate() {
        let p = Prices::default();
        let mut u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 1_000_000,
            cache_write_tokens: 0,
            model: "claude-sonnet-4-5-20250929".into(),
            ..Default::default()
        };
        let s = p.spend(&u, "");
        // $3 input + $1.50 output + $0.30 cache reads.
        assert_eq!(s.usd_micros, 4_800_000);
        assert_eq!(s.tokens, 1_100_000, "cache reads are not counted");
        assert!(s.estimated);
        u.cost_usd = Some(4.25);
        let s = p.spend(&u, "");
        assert_eq!((s.usd_micros, s.estimated), (4_250_000, false));
        // An unknown model is priced as the dearest known one.
        u.cost_usd = None;
        u.model = "some-new-model".into();
        assert_eq!(
            p.spend(&u, "").usd_micros,
            15_000_000 + 7_500_000 + 1_500_000
        );
    }

    #[test]
    fn configured_prices_come_first() {
        let mut m = BTreeMap::new();
        m.insert(
            "claude-sonnet-4*".to_string(),
            Price {
                input: 1.0,
                output: 2.0,
                cache_read: None,
                cache_write: None,
            },
        );
        let p = Prices::with(&m).unwrap();
        assert_eq!(p.of("claude-sonnet-4-5").input, 1.0);
        assert_eq!(p.of("gpt-5.3-codex").input, 1.25);
        m.insert(
            "a*b*".into(),
            Price {
                input: 1.0,
                output: 1.0,
                cache_read: None,
                cache_write: None,
            },
        );
        assert!(Prices::with(&m).is_err());
    }

    #[test]
    fn the_config_section() {
        let c = parse_section(
            "notify: {}\nbudgets:\n  task: $5\n  day: $50\n  users:\n    alice: $100\n  prices:\n    my-model: { input: 1, output: 2 }\n",
        )
        .unwrap();
        assert_eq!(c.task.unwrap().usd_micros, 5_000_000);
        assert_eq!(c.day_for("alice").unwrap().usd_micros, 100_000_000);
        assert_eq!(c.day_for("bob").unwrap().usd_micros, 50_000_000);
        assert_eq!(c.prices.of("my-model").output, 2.0);
        assert_eq!(parse_section("").unwrap(), BudgetConfig::default());
        assert!(
            parse_section("budgets:\n  taks: $5\n")
                .unwrap_err()
                .contains("taks")
        );
        assert!(
            parse_section("budgets:\n  task: lots\n")
                .unwrap_err()
                .contains("budgets.task")
        );
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_399_999), 0);
        assert_eq!(day_of(86_400_000), 1);
        assert_eq!(day_of(-1), -1);
    }
}
