//! The read rule seam: whether a user may read events of a name. The tenant's guest decides when it
//! exports `can-read` (`guests`); otherwise, and in unit tests, everyone reads everything. Streams
//! and history pages ask through it, once per stream (or page) and name.

/// Who asks to read.
pub struct Reader<'a> {
    pub username: &'a str,
    pub tenant: &'a str,
    /// The user's scopes, each `resource:operation`.
    pub scopes: &'a [String],
}

#[async_trait::async_trait]
pub trait ReadRule: Send + Sync {
    /// Whether `tenant` has a rule at all: without one every name is readable, and nothing is asked.
    fn applies(&self, tenant: &str) -> bool;

    /// Whether `reader` may read events named `name`; false when the rule fails (fail closed).
    async fn allows(&self, reader: &Reader<'_>, name: &str) -> bool;

    /// Moves on whenever a rule may have changed (a guest file loaded or removed): answers
    /// remembered under an older generation must be asked again.
    fn generation(&self) -> u64;
}

/// No rule: everyone reads everything.
pub struct NoReadRule;

#[async_trait::async_trait]
impl ReadRule for NoReadRule {
    fn applies(&self, _tenant: &str) -> bool {
        false
    }

    async fn allows(&self, _reader: &Reader<'_>, _name: &str) -> bool {
        true
    }

    fn generation(&self) -> u64 {
        0
    }
}

/// A stream's (or a page's) remembered answers of its tenant's rule, asked again when the rule
/// may have changed. Bounded: past `MAX_ANSWERS` names it starts afresh.
pub struct ReadAnswers {
    generation: u64,
    applies: bool,
    answers: std::collections::HashMap<String, bool>,
}

/// Names whose answers one stream remembers at most.
const MAX_ANSWERS: usize = 4_096;

impl Default for ReadAnswers {
    fn default() -> Self {
        Self {
            // No generation yet: the first question asks whether the rule applies.
            generation: u64::MAX,
            applies: false,
            answers: std::collections::HashMap::new(),
        }
    }
}

impl ReadAnswers {
    /// Whether `reader` may read `name`, asking `rule` only for a name not answered yet.
    pub async fn allows(&mut self, rule: &dyn ReadRule, reader: &Reader<'_>, name: &str) -> bool {
        let generation = rule.generation();
        if generation != self.generation {
            self.generation = generation;
            self.applies = rule.applies(reader.tenant);
            self.answers.clear();
        }
        if !self.applies {
            return true;
        }
        if let Some(&answer) = self.answers.get(name) {
            return answer;
        }
        let answer = rule.allows(reader, name).await;
        if self.answers.len() >= MAX_ANSWERS {
            self.answers.clear();
        }
        self.answers.insert(name.to_owned(), answer);
        answer
    }

    /// Forgets every answer (the reader's scopes changed).
    pub fn forget(&mut self) {
        self.answers.clear();
    }
}
