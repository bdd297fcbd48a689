//! A small regular-expression engine for the PTB lexer rules in `tokenize.rs`.
//!
//! Stanford's `PTBTokenizer` is a JFlex scanner: the rules are regular expressions, the longest
//! match wins and ties go to the earlier rule. Porting it as data (patterns written in JFlex's own
//! syntax) keeps the port reviewable against the original grammar, instead of hiding the rules in
//! hand-written loops. This engine supports exactly what those rules use: literals (case-insensitive,
//! like JFlex's `%caseless`, which never applies inside `[...]`), classes with ranges, negation and
//! `[:letter:]` / `[:digit:]` / `[:uppercase:]` / `[:lowercase:]`, grouping, `|`, `*`, `+`, `?`,
//! `{n}` / `{n,m}` and `{MACRO}` references. It matches by Thompson-NFA simulation, so it never
//! backtracks and its cost is linear in the text it looks at; the sets of NFA states it goes
//! through are cached as a lazily built DFA (per thread, bounded), so that the lexer's hot loop is
//! mostly one table look-up per pattern and character.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One item of a character class.
#[derive(Clone, Debug)]
enum ClassItem {
    Range(char, char),
    Letter,
    Digit,
    Upper,
    Lower,
}

/// What a consuming NFA step accepts.
#[derive(Clone, Debug)]
enum MatchKind {
    /// A literal, compared case-insensitively (stored folded).
    Lit(char),
    /// A character class; `%caseless` does not apply inside classes.
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

/// A step's test, with the answer for every ASCII character precomputed (the lexer's hot loop).
#[derive(Clone, Debug)]
struct Matcher {
    kind: MatchKind,
    ascii: u128,
}

impl Matcher {
    fn new(kind: MatchKind) -> Self {
        let mut m = Matcher { kind, ascii: 0 };
        m.ascii = (0u8..128)
            .filter(|&b| m.matches_slow(b as char))
            .fold(0, |bits, b| bits | (1u128 << b));
        m
    }

    fn lit(c: char) -> Self {
        Matcher::new(MatchKind::Lit(fold(c)))
    }

    fn class(negated: bool, items: Vec<ClassItem>) -> Self {
        Matcher::new(MatchKind::Class { negated, items })
    }

    fn matches(&self, c: char) -> bool {
        if c.is_ascii() {
            return self.ascii & (1u128 << c as u32) != 0;
        }
        self.matches_slow(c)
    }

    fn matches_slow(&self, c: char) -> bool {
        match &self.kind {
            MatchKind::Lit(l) => fold(c) == *l,
            MatchKind::Class { negated, items } => {
                items.iter().any(|i| item_matches(i, c)) != *negated
            }
        }
    }
}

fn item_matches(item: &ClassItem, c: char) -> bool {
    // JFlex 1.4 scans UTF-16 code units: a character outside the BMP arrives as two surrogates,
    // which are neither letters, digits nor upper/lower case.
    let bmp = (c as u32) <= 0xFFFF;
    match item {
        ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
        ClassItem::Letter => bmp && is_letter(c),
        ClassItem::Digit => bmp && is_digit(c),
        ClassItem::Upper => bmp && c.is_uppercase(),
        ClassItem::Lower => bmp && c.is_lowercase(),
    }
}

/// Case folding used for `%caseless` literals.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Java's `Character.isLetter` (general category L*), approximated by Unicode `Alphabetic`
/// minus the letter-like numbers and the combining marks that `Alphabetic` adds.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.is_alphabetic()
        && !is_combining_mark(c)
        && !matches!(c, '\u{2160}'..='\u{2188}' | '\u{3007}' | '\u{3021}'..='\u{3029}')
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{0483}'..='\u{0489}' | '\u{0591}'..='\u{05C7}'
        | '\u{0610}'..='\u{061A}' | '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{06D6}'..='\u{06ED}'
        | '\u{0900}'..='\u{0903}' | '\u{093A}'..='\u{094F}' | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}' | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// Java's `Character.isDigit` (general category Nd): ASCII plus the common decimal-digit blocks.
pub(crate) fn is_digit(c: char) -> bool {
    const ZEROS: [u32; 22] = [
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
        0x0D66, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0xFF10,
    ];
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let u = c as u32;
    ZEROS.iter().any(|&z| (z..z + 10).contains(&u))
}

/// Parsed regular expression.
#[derive(Clone, Debug)]
enum Node {
    Empty,
    Atom(Matcher),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat(Box<Node>, u32, Option<u32>),
}

/// NFA instruction.
#[derive(Clone, Debug)]
enum Inst {
    Step(Matcher, usize),
    Split(usize, usize),
    Jmp(usize),
    Accept,
}

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    insts: Vec<Inst>,
    /// The consuming instructions reachable from the start, to reject a position in one look.
    first: Vec<usize>,
    /// `may_start_with` precomputed for ASCII (bit c set when c can start a match).
    ascii_first: u128,
    accepts_empty: bool,
    /// Index of this pattern's DFA in the thread's [`DFAS`].
    id: usize,
}

/// Several patterns run side by side, as a JFlex scanner runs all its rules: one scan from a
/// position gives, for every end offset, which of the patterns match there.
#[derive(Debug)]
pub(crate) struct PatternSet {
    patterns: Vec<Pattern>,
    id: usize,
}

/// Reusable scratch space for matching (avoids allocating per token).
#[derive(Default)]
pub(crate) struct Scratch {
    seen: Vec<u32>,
    generation: u32,
    stack: Vec<usize>,
}

/// A DFA state's transition not computed yet.
const UNKNOWN: u32 = u32::MAX;
/// The state with no NFA states left: matching stops.
const DEAD: u32 = u32::MAX - 1;
/// Bounds of one cache; past them it starts over (rare: on real text a single pattern reaches a
/// few dozen states, the lexer's whole rule set a few hundred).
const MAX_NON_ASCII_TRANSITIONS: usize = 16384;

/// An NFA as the lazily built DFA sees it. A position is `(pattern index << 32) | instruction`;
/// sets of positions are sorted and include the `Accept` instructions reached, so that a DFA
/// state knows which patterns match where it is.
trait Nfa {
    fn dfa_id(&self) -> usize;
    fn max_dfa_states(&self) -> usize;
    fn patterns(&self) -> &[Pattern];

    /// The start set: every pattern's first consuming instructions (and Accept when it matches
    /// the empty string).
    fn start(&self) -> Vec<u64> {
        let mut set = Vec::new();
        for (i, p) in self.patterns().iter().enumerate() {
            let i = (i as u64) << 32;
            set.extend(p.first.iter().map(|&pc| i | pc as u64));
            if p.accepts_empty {
                set.push(i | p.accept_pc() as u64);
            }
        }
        set.sort_unstable();
        set
    }

    /// The set after consuming `c` from `set`.
    fn step(&self, set: &[u64], c: char, scratch: &mut Scratch) -> Vec<u64> {
        let patterns = self.patterns();
        let mut next = Vec::new();
        let mut closure = Vec::new();
        // `set` is sorted, so each pattern's positions are contiguous; each pattern gets its own
        // generation of "seen" marks.
        let mut current = None;
        for &pos in set {
            let i = (pos >> 32) as usize;
            let p = &patterns[i];
            if current != Some(i) {
                current = Some(i);
                scratch.reset(p.insts.len());
            }
            let Inst::Step(m, to) = &p.insts[(pos & 0xFFFF_FFFF) as usize] else {
                continue;
            };
            if !m.matches(c) {
                continue;
            }
            closure.clear();
            let tag = (i as u64) << 32;
            if p.add(&mut closure, scratch, *to) {
                next.push(tag | p.accept_pc() as u64);
            }
            next.extend(closure.iter().map(|&pc| tag | pc as u64));
        }
        next.sort_unstable();
        next.dedup();
        next
    }

    /// Bit i set when pattern i is at Accept in `set`.
    fn accepts(&self, set: &[u64]) -> u128 {
        let patterns = self.patterns();
        set.iter()
            .filter(|&&pos| {
                let p = &patterns[(pos >> 32) as usize];
                (pos & 0xFFFF_FFFF) as usize == p.accept_pc()
            })
            .fold(0, |mask, &pos| mask | 1u128 << (pos >> 32))
    }

    /// Walks the DFA from `start` over `text`, calling `f(end, accepts)` after each character
    /// at which some pattern matches, until no pattern can go on.
    fn walk(
        &self,
        text: &[char],
        start: usize,
        scratch: &mut Scratch,
        mut f: impl FnMut(usize, u128),
    ) {
        DFAS.with(|dfas| {
            let mut dfas = dfas.borrow_mut();
            let id = self.dfa_id();
            if dfas.len() <= id {
                dfas.resize_with(id + 1, || None);
            }
            let slot = &mut dfas[id];
            if slot.as_ref().is_none_or(|d| {
                d.states.len() > self.max_dfa_states() || d.non_ascii > MAX_NON_ASCII_TRANSITIONS
            }) {
                *slot = Some(Dfa::new(self.start(), self.accepts(&self.start())));
            }
            let Some(dfa) = slot.as_mut() else {
                return;
            };
            let mut state = 0;
            for (i, &c) in text.iter().enumerate().skip(start) {
                state = dfa.step(self, state, c, scratch);
                if state == DEAD {
                    break;
                }
                let accepts = dfa.states[state as usize].accepts;
                if accepts != 0 {
                    f(i + 1, accepts);
                }
            }
        });
    }
}

/// The lazily built DFA of an [`Nfa`]: state 0 is its start set; transitions are filled in as
/// characters are met.
#[derive(Debug)]
struct Dfa {
    states: Vec<DfaState>,
    ids: HashMap<Box<[u64]>, u32>,
    non_ascii: usize,
}

#[derive(Debug)]
struct DfaState {
    set: Box<[u64]>,
    /// Bit i: pattern i matches on reaching this state.
    accepts: u128,
    /// Next state, [`DEAD`] or [`UNKNOWN`], per ASCII character.
    ascii: Box<[u32; 128]>,
    other: HashMap<char, u32>,
}

thread_local! {
    /// The DFAs of all patterns and pattern sets, by id, for this thread.
    static DFAS: RefCell<Vec<Option<Dfa>>> = const { RefCell::new(Vec::new()) };
}

static NEXT_DFA_ID: AtomicUsize = AtomicUsize::new(0);

impl Dfa {
    fn new(start: Vec<u64>, accepts: u128) -> Self {
        let mut dfa = Dfa {
            states: Vec::new(),
            ids: HashMap::new(),
            non_ascii: 0,
        };
        dfa.intern(start, accepts);
        dfa
    }

    fn intern(&mut self, set: Vec<u64>, accepts: u128) -> u32 {
        if let Some(&id) = self.ids.get(set.as_slice()) {
            return id;
        }
        let id = self.states.len() as u32;
        let set = set.into_boxed_slice();
        self.ids.insert(set.clone(), id);
        self.states.push(DfaState {
            set,
            accepts,
            ascii: Box::new([UNKNOWN; 128]),
            other: HashMap::new(),
        });
        id
    }

    /// The state after `c` from `state` ([`DEAD`] when nothing is left).
    fn step<N: Nfa + ?Sized>(
        &mut self,
        nfa: &N,
        state: u32,
        c: char,
        scratch: &mut Scratch,
    ) -> u32 {
        let s = &self.states[state as usize];
        let cached = if c.is_ascii() {
            s.ascii[c as usize]
        } else {
            s.other.get(&c).copied().unwrap_or(UNKNOWN)
        };
        if cached != UNKNOWN {
            return cached;
        }
        let next = nfa.step(&self.states[state as usize].set, c, scratch);
        let next = if next.is_empty() {
            DEAD
        } else {
            let accepts = nfa.accepts(&next);
            self.intern(next, accepts)
        };
        let s = &mut self.states[state as usize];
        if c.is_ascii() {
            s.ascii[c as usize] = next;
        } else {
            s.other.insert(c, next);
            self.non_ascii += 1;
        }
        next
    }
}

impl Nfa for Pattern {
    fn dfa_id(&self) -> usize {
        self.id
    }
    fn max_dfa_states(&self) -> usize {
        512
    }
    fn patterns(&self) -> &[Pattern] {
        std::slice::from_ref(self)
    }
}

impl Nfa for PatternSet {
    fn dfa_id(&self) -> usize {
        self.id
    }
    fn max_dfa_states(&self) -> usize {
        8192
    }
    fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

impl PatternSet {
    /// At most 128 patterns (match sets are `u128` masks).
    pub(crate) fn new(patterns: Vec<Pattern>) -> Self {
        assert!(patterns.len() <= 128, "at most 128 patterns in a set");
        PatternSet {
            patterns,
            id: NEXT_DFA_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The non-empty matches from `start`: `(end, mask)` with bit i of `mask` set when pattern
    /// i matches `text[start..end]`, by ascending `end`.
    pub(crate) fn scan(
        &self,
        text: &[char],
        start: usize,
        scratch: &mut Scratch,
        out: &mut Vec<(usize, u128)>,
    ) {
        out.clear();
        if start < text.len() {
            self.walk(text, start, scratch, |end, mask| out.push((end, mask)));
        }
    }
}

impl Pattern {
    /// Compiles `src` after expanding `{MACRO}` references from `macros`.
    /// Panics on a malformed pattern: patterns are compile-time constants of this crate,
    /// and the tokenizer's tests compile every one of them.
    pub(crate) fn new(src: &str, macros: &HashMap<&str, &str>) -> Pattern {
        let expanded = expand(src, macros, 0);
        let chars: Vec<char> = expanded.chars().collect();
        let mut parser = Parser { s: &chars, i: 0 };
        let node = parser.alt();
        assert!(
            parser.i == chars.len(),
            "pattern {src:?}: unexpected {:?} at {}",
            chars.get(parser.i),
            parser.i
        );
        let mut insts = Vec::new();
        let (entry, holes) = compile(&node, &mut insts);
        insts.push(Inst::Accept);
        let accept = insts.len() - 1;
        patch(&mut insts, &holes, accept);
        let mut p = Pattern {
            insts,
            first: Vec::new(),
            ascii_first: 0,
            accepts_empty: false,
            id: NEXT_DFA_ID.fetch_add(1, Ordering::Relaxed),
        };
        let mut scratch = Scratch::default();
        scratch.reset(p.insts.len());
        let mut first = Vec::new();
        p.accepts_empty = p.add(&mut first, &mut scratch, entry);
        p.first = first;
        p.ascii_first = (0u8..128)
            .filter(|&b| p.may_start_with_slow(b as char))
            .fold(0, |bits, b| bits | (1u128 << b));
        p
    }

    /// Can this pattern match a non-empty string starting with `c`?
    fn may_start_with(&self, c: char) -> bool {
        if c.is_ascii() {
            return self.ascii_first & (1u128 << c as u32) != 0;
        }
        self.may_start_with_slow(c)
    }

    fn may_start_with_slow(&self, c: char) -> bool {
        self.first.iter().any(|&pc| match &self.insts[pc] {
            Inst::Step(m, _) => m.matches(c),
            _ => false,
        })
    }

    /// All end offsets (ascending, relative to `text`) of matches that start at `start`.
    pub(crate) fn ends(
        &self,
        text: &[char],
        start: usize,
        scratch: &mut Scratch,
        out: &mut Vec<usize>,
    ) {
        out.clear();
        if self.accepts_empty {
            out.push(start);
        }
        if start >= text.len() || !self.may_start_with(text[start]) {
            return;
        }
        self.walk(text, start, scratch, |end, _| out.push(end));
    }

    /// The `Accept` instruction (always the last).
    fn accept_pc(&self) -> usize {
        self.insts.len() - 1
    }

    /// Longest match length from `start`, if any.
    pub(crate) fn longest(
        &self,
        text: &[char],
        start: usize,
        scratch: &mut Scratch,
        buf: &mut Vec<usize>,
    ) -> Option<usize> {
        self.ends(text, start, scratch, buf);
        buf.last().map(|e| e - start)
    }

    /// Adds the epsilon closure of `pc` to `list`; returns whether Accept was reached.
    fn add(&self, list: &mut Vec<usize>, scratch: &mut Scratch, pc: usize) -> bool {
        let mut stack = std::mem::take(&mut scratch.stack);
        stack.clear();
        stack.push(pc);
        let mut accepted = false;
        while let Some(pc) = stack.pop() {
            if scratch.seen[pc] == scratch.generation {
                continue;
            }
            scratch.seen[pc] = scratch.generation;
            match self.insts[pc] {
                Inst::Step(..) => list.push(pc),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Jmp(a) => stack.push(a),
                Inst::Accept => accepted = true,
            }
        }
        scratch.stack = stack;
        accepted
    }
}

impl Scratch {
    fn reset(&mut self, n: usize) {
        if self.seen.len() < n {
            self.seen = vec![0; n];
            self.generation = 0;
        }
        self.next_generation();
    }

    /// A fresh "seen" mark. One scratch serves a whole text (one step per character looked at),
    /// so the counter does wrap on big inputs; marks from before the wrap are cleared then.
    fn next_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
    }
}

/// Expands `{NAME}` macro references (as JFlex does, each in parentheses); `{n}` / `{n,m}` stay.
fn expand(src: &str, macros: &HashMap<&str, &str>, depth: usize) -> String {
    assert!(depth < 20, "macro recursion too deep in {src:?}");
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(open) = rest.find('{') {
        // A `{` right after a backslash is a literal.
        if rest[..open].ends_with('\\') && !rest[..open].ends_with("\\\\") {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            continue;
        }
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .expect("unclosed {");
        let name = &rest[open + 1..close];
        out.push_str(&rest[..open]);
        if name.chars().all(|c| c.is_ascii_digit() || c == ',') {
            out.push_str(&rest[open..=close]);
        } else {
            let body = macros
                .get(name)
                .unwrap_or_else(|| panic!("unknown macro {name}"));
            out.push('(');
            out.push_str(&expand(body, macros, depth + 1));
            out.push(')');
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn alt(&mut self) -> Node {
        let mut branches = vec![self.concat()];
        while self.peek() == Some('|') {
            self.i += 1;
            branches.push(self.concat());
        }
        if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(branches)
        }
    }

    fn concat(&mut self) -> Node {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom();
            items.push(self.postfix(atom));
        }
        match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        }
    }

    fn postfix(&mut self, mut node: Node) -> Node {
        loop {
            match self.peek() {
                Some('*') => node = Node::Repeat(Box::new(node), 0, None),
                Some('+') => node = Node::Repeat(Box::new(node), 1, None),
                Some('?') => node = Node::Repeat(Box::new(node), 0, Some(1)),
                Some('{') => {
                    let close = self.s[self.i..]
                        .iter()
                        .position(|&c| c == '}')
                        .expect("unclosed {")
                        + self.i;
                    let spec: String = self.s[self.i + 1..close].iter().collect();
                    let (lo, hi) = match spec.split_once(',') {
                        Some((a, b)) => (
                            a.parse().expect("bad {n,m}"),
                            Some(b.parse().expect("bad {n,m}")),
                        ),
                        None => {
                            let n = spec.parse().expect("bad {n}");
                            (n, Some(n))
                        }
                    };
                    node = Node::Repeat(Box::new(node), lo, hi);
                    self.i = close;
                }
                _ => return node,
            }
            self.i += 1;
        }
    }

    fn atom(&mut self) -> Node {
        let c = self.peek().expect("pattern ended early");
        self.i += 1;
        match c {
            '(' => {
                let inner = self.alt();
                assert_eq!(self.peek(), Some(')'), "missing )");
                self.i += 1;
                inner
            }
            '[' => {
                // A bare predicate class such as `[:letter:]`, or an ordinary class.
                self.i -= 1;
                match self.predicate() {
                    Some(item) => Node::Atom(Matcher::class(false, vec![item])),
                    None => {
                        self.i += 1;
                        self.class()
                    }
                }
            }
            '\\' => Node::Atom(Matcher::lit(self.escape())),
            '.' => Node::Atom(Matcher::class(true, vec![ClassItem::Range('\n', '\n')])),
            _ => Node::Atom(Matcher::lit(c)),
        }
    }

    /// Reads the character after a backslash.
    fn escape(&mut self) -> char {
        let c = self.peek().expect("dangling \\");
        self.i += 1;
        match c {
            'u' => {
                let hex: String = self.s[self.i..self.i + 4].iter().collect();
                self.i += 4;
                char::from_u32(u32::from_str_radix(&hex, 16).expect("bad \\u")).expect("bad \\u")
            }
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'f' => '\u{000C}',
            _ => c,
        }
    }

    /// If `[:name:]` (a named predicate class) starts at the current `[`, consumes it.
    fn predicate(&mut self) -> Option<ClassItem> {
        const NAMES: [(&str, ClassItem); 4] = [
            ("[:letter:]", ClassItem::Letter),
            ("[:digit:]", ClassItem::Digit),
            ("[:uppercase:]", ClassItem::Upper),
            ("[:lowercase:]", ClassItem::Lower),
        ];
        for (name, item) in NAMES {
            let len = name.chars().count();
            if self.s.len() >= self.i + len
                && self.s[self.i..self.i + len]
                    .iter()
                    .copied()
                    .eq(name.chars())
            {
                self.i += len;
                return Some(item);
            }
        }
        None
    }

    fn class(&mut self) -> Node {
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.i += 1;
        }
        let mut items = Vec::new();
        loop {
            let c = self.peek().expect("unclosed [");
            self.i += 1;
            let lo = match c {
                ']' => break,
                '[' => {
                    self.i -= 1;
                    match self.predicate() {
                        Some(item) => {
                            items.push(item);
                            continue;
                        }
                        None => {
                            self.i += 1;
                            '['
                        }
                    }
                }
                '\\' => self.escape(),
                _ => c,
            };
            let hi = if self.peek() == Some('-') && self.s.get(self.i + 1) != Some(&']') {
                self.i += 1;
                let h = self.peek().expect("bad range");
                self.i += 1;
                if h == '\\' {
                    self.escape()
                } else {
                    h
                }
            } else {
                lo
            };
            items.push(ClassItem::Range(lo, hi));
        }
        Node::Atom(Matcher::class(negated, items))
    }
}

/// Sentinel for a not-yet-patched jump target.
const HOLE: usize = usize::MAX;

/// Emits `node`; returns (entry, list of instructions whose HOLE must point at the exit).
fn compile(node: &Node, insts: &mut Vec<Inst>) -> (usize, Vec<usize>) {
    match node {
        Node::Empty => {
            insts.push(Inst::Jmp(HOLE));
            (insts.len() - 1, vec![insts.len() - 1])
        }
        Node::Atom(m) => {
            insts.push(Inst::Step(m.clone(), HOLE));
            (insts.len() - 1, vec![insts.len() - 1])
        }
        Node::Concat(items) => {
            let (entry, mut holes) = compile(&items[0], insts);
            for item in &items[1..] {
                let (e, h) = compile(item, insts);
                patch(insts, &holes, e);
                holes = h;
            }
            (entry, holes)
        }
        Node::Alt(branches) => {
            let mut entries = Vec::new();
            let mut holes = Vec::new();
            for b in branches {
                let (e, h) = compile(b, insts);
                entries.push(e);
                holes.extend(h);
            }
            // Chain of splits over all branches.
            let mut entry = *entries.last().unwrap_or(&0);
            for &e in entries.iter().rev().skip(1) {
                insts.push(Inst::Split(e, entry));
                entry = insts.len() - 1;
            }
            (entry, holes)
        }
        Node::Repeat(inner, lo, hi) => compile_repeat(inner, *lo, *hi, insts),
    }
}

fn compile_repeat(
    inner: &Node,
    lo: u32,
    hi: Option<u32>,
    insts: &mut Vec<Inst>,
) -> (usize, Vec<usize>) {
    // Pieces in sequence: `lo` mandatory copies, then a loop (no upper bound) or `hi - lo`
    // optional copies, each optional copy being a split that may skip it.
    let mut pieces: Vec<(usize, Vec<usize>)> = Vec::new();
    for _ in 0..lo {
        pieces.push(compile(inner, insts));
    }
    match hi {
        None => {
            insts.push(Inst::Split(HOLE, HOLE));
            let split = insts.len() - 1;
            let (e, h) = compile(inner, insts);
            patch(insts, &h, split);
            insts[split] = Inst::Split(e, HOLE);
            pieces.push((split, vec![split]));
        }
        Some(hi) => {
            for _ in lo..hi {
                insts.push(Inst::Split(HOLE, HOLE));
                let split = insts.len() - 1;
                let (e, mut h) = compile(inner, insts);
                insts[split] = Inst::Split(e, HOLE);
                h.push(split);
                pieces.push((split, h));
            }
        }
    }
    let mut pieces = pieces.into_iter();
    let Some((entry, mut holes)) = pieces.next() else {
        return compile(&Node::Empty, insts);
    };
    for (e, h) in pieces {
        patch(insts, &holes, e);
        holes = h;
    }
    (entry, holes)
}

fn patch(insts: &mut [Inst], holes: &[usize], target: usize) {
    for &h in holes {
        match &mut insts[h] {
            Inst::Step(_, to) | Inst::Jmp(to) => {
                if *to == HOLE {
                    *to = target
                }
            }
            Inst::Split(a, b) => {
                if *a == HOLE {
                    *a = target
                } else if *b == HOLE {
                    *b = target
                }
            }
            Inst::Accept => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> Option<usize> {
        let macros = HashMap::from([("D", "[0-9]"), ("W", "[a-z]+")]);
        let pat = Pattern::new(p, &macros);
        let text: Vec<char> = t.chars().collect();
        pat.longest(&text, 0, &mut Scratch::default(), &mut Vec::new())
    }

    #[test]
    fn basics() {
        assert_eq!(m("abc", "abcd"), Some(3));
        assert_eq!(m("abc", "ABC"), Some(3));
        assert_eq!(m("[a]bc", "Abc"), None);
        assert_eq!(m("a|ab|abc", "abx"), Some(2));
        assert_eq!(m("{D}+(\\.{D}+)*", "3.5.x"), Some(3));
        assert_eq!(m("{D}{1,2}-{D}{2,4}", "12-12345"), Some(7));
        assert_eq!(m("{D}{2}", "1"), None);
        assert_eq!(m("[^ \\t]+", "ab c"), Some(2));
        assert_eq!(m("{W}(-{W})*", "well-known-"), Some(10));
        assert_eq!(m("[:letter:]+", "café!"), Some(4));
        assert_eq!(m("x?", "y"), Some(0));
        assert_eq!(m("\\u00A0", "\u{a0}"), Some(1));
        assert_eq!(m("[\\-+]?{D}", "-1"), Some(2));
        assert_eq!(m("(a|b)*c", "ababc"), Some(5));
    }

    #[test]
    fn seen_marks_survive_the_generation_counter_wrapping() {
        let pat = Pattern::new("(a|b)*c", &HashMap::new());
        let text: Vec<char> = "ababc".chars().collect();
        let mut scratch = Scratch::default();
        scratch.reset(pat.insts.len());
        // The counter wraps inside the next match (it used to overflow there).
        scratch.generation = u32::MAX - 2;
        scratch.seen.iter_mut().for_each(|s| *s = 1);
        assert_eq!(
            pat.longest(&text, 0, &mut scratch, &mut Vec::new()),
            Some(5)
        );
        assert_eq!(
            pat.longest(&text, 0, &mut scratch, &mut Vec::new()),
            Some(5)
        );
    }
}
