//! The caption tokenizer of the COCO caption evaluation (`pycocoevalcap`'s `PTBTokenizer`).
//!
//! `pycocoevalcap` joins all captions with newlines, runs Stanford CoreNLP 3.4.1's
//! `edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` over them and drops the
//! punctuation tokens in [`PUNCTUATIONS`]. This module ports that lexer (its JFlex rules, as data for
//! [`super::pattern`]) as far as English captions need, checked token for token against the real jar
//! (see `tools/record_metrics.py` and `tests/metrics.rs`). Behaviour worth knowing:
//!
//! - punctuation is split off and dropped: `a dog.` -> `a dog`; `don't` -> `do n't`, `can't` ->
//!   `ca n't`, `cannot` -> `can not`, `gonna` -> `gon na`, `dog's` -> `dog 's`, `dogs'` -> `dogs`;
//! - hyphenated words, numbers and abbreviations stay whole: `well-known`, `3.5`, `1,000`, `u.s.`,
//!   `mr.`, `st.`, `etc.`, `a.m.`; a single letter keeps its period (`t.`) unless a sentence seems to
//!   start after it (`T. The` -> `t`), and that context reaches into the *next caption*, which is why
//!   [`tokenize_batch`] tokenizes captions together, exactly as `pycocoevalcap` does;
//! - brackets become `-lrb-`, `-rrb-`, `-lsb-`, `-rsb-`, `-lcb-`, `-rcb-` and, because the lowercasing
//!   happens before `pycocoevalcap`'s filter (which lists the upper-case forms), they are *kept*;
//! - quotes become `` ` `` / `'` / ```` `` ```` / `''` and are dropped; `$5` -> `$ 5`, `50%` -> `50 %`;
//! - `3 1/2` is one token with a no-break space inside (BLEU and CIDEr split it, ROUGE-L does not,
//!   again as in `pycocoevalcap`).
//!
//! Checked against the jar on ~150,000 lines (generated captions with every construct above, random
//! punctuation soups, and prose from package documentation with URLs, e-mails and code): all agree
//! except a digit-initial file name right before an apostrophe (`5etc.x'`), where JFlex's
//! trailing-context handling differs. Unicode classes are approximated (Rust's `Alphabetic` for
//! Java's `isLetter`), which only matters for rare scripts.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::pattern::{Pattern, PatternSet, Scratch};

/// Tokens `pycocoevalcap` removes after tokenization (note: upper-case bracket names, which never
/// match the lower-cased output).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Tokenizes one caption as `pycocoevalcap` would if it were the only caption.
pub fn tokenize(caption: &str) -> String {
    tokenize_batch(&[caption]).pop().unwrap_or_default()
}

/// Tokenizes captions as one `pycocoevalcap` batch: joined by newlines, so a caption may see the
/// start of the next one (see the module doc). Returns one space-joined string per caption.
pub fn tokenize_batch<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let text = join_captions(captions);
    let mut lines = ptb_tokenize(&text);
    // One output line per caption: line breaks inside captions were replaced by spaces.
    lines.resize(captions.len(), Vec::new());
    lines
        .into_iter()
        .map(|tokens| {
            tokens
                .into_iter()
                .filter(|t| !PUNCTUATIONS.contains(&t.as_str()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Joins captions as `pycocoevalcap` does (`'\n'.join(c.replace('\n', ' '))`). Other characters the
/// PTB lexer treats as line breaks are replaced too: in `pycocoevalcap` they would shift every later
/// caption onto the wrong image, which is a bug rather than behaviour worth copying.
fn join_captions<S: AsRef<str>>(captions: &[S]) -> String {
    let mut text = String::new();
    for (i, caption) in captions.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.extend(caption.as_ref().chars().map(|c| match c {
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{000B}' | '\u{000C}' => ' ',
            c => c,
        }));
    }
    text
}

/// How far one lexer step looks ahead: a token plus its trailing context is at most this many
/// characters. JFlex has no such limit, which makes CoreNLP (and made this port) quadratic on a
/// long stretch without a token boundary that some rule keeps matching without accepting: in
/// `a,a,a,...` every `a` starts a possible e-mail address that only ends at the next space, and
/// each of them was scanned to that space (16 KB of it took seconds; found by fuzzing). Captions
/// have no tokens anywhere near this long, so the limit changes nothing real and keeps the lexer
/// linear in the text.
pub const MAX_LOOKAHEAD: usize = 256;

/// The raw output of `PTBTokenizer -preserveLines -lowerCase`: lower-cased tokens per input line,
/// before any punctuation is removed. A token is at most [`MAX_LOOKAHEAD`] characters long; a
/// longer run is split.
pub fn ptb_tokenize(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let lexer = lexer();
    let mut scratch = Scratch::default();
    let mut bufs = (Vec::new(), Vec::new());
    let mut lines = vec![Vec::new()];
    let mut pos = 0;
    while pos < chars.len() {
        let window = &chars[..chars.len().min(pos + MAX_LOOKAHEAD)];
        let (rule, len) = lexer.best(window, pos, &mut scratch, &mut bufs);
        let rule = &lexer.rules[rule];
        let matched: String = chars[pos..pos + len].iter().collect();
        let (token, consumed) = apply(rule.action, &matched);
        match token {
            Emit::Token(t) => push_token(&mut lines, &t),
            Emit::Newline => lines.push(Vec::new()),
            Emit::Nothing => {}
        }
        pos += consumed.max(1);
    }
    lines
}

fn push_token(lines: &mut [Vec<String>], token: &str) {
    if let Some(line) = lines.last_mut() {
        line.push(token.to_lowercase());
    }
}

/// What a rule does with its match (the JFlex actions of `PTBLexer`).
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Return the text unchanged.
    Keep,
    /// Return the text without soft hyphens (U+00AD).
    SoftHyphen,
    /// Return a fixed text (`-LRB-`, `--`, `...`, `&`).
    Text(&'static str),
    /// LaTeX-style quote normalisation; `true` when the quote probably opens.
    Quotes(bool),
    /// Return all but the last `n` characters, which are lexed again (`cannot` -> `can`, `not`).
    PushBack(usize),
    /// Sentence-final acronym: `I.` -> `I` + `.`; `U.S.` -> `U.S.` + `.` (the period is lexed again).
    Acronym,
    /// Sentence-final abbreviation: `etc.` -> `etc.` + `.`.
    Reduplicate,
    /// Spaces inside the token become no-break spaces (fractions, SGML tags).
    NoBreakSpace,
    /// `½` -> `1/2` and friends.
    Fraction,
    /// `£` -> `#`, `¢` -> `cents`, euro signs -> `$`.
    Currency,
    /// `&amp;` -> `&`.
    Amp,
    /// `(`/`)` inside smileys become `-LRB-`/`-RRB-`.
    Parens,
    /// Phone numbers: no-break spaces and `-LRB-`/`-RRB-`.
    Phone,
    /// Three or four hyphens are a dash.
    Hyphens,
    /// Whitespace: no token.
    Skip,
    /// A line break (`-preserveLines`).
    Newline,
    /// A character the lexer does not know: dropped (CoreNLP's default `untokenizable=firstDelete`).
    Delete,
}

enum Emit {
    Token(String),
    Newline,
    Nothing,
}

/// Applies `action` to the matched text; returns what to emit and how many characters it consumed.
fn apply(action: Action, text: &str) -> (Emit, usize) {
    let n = text.chars().count();
    let token = |s: String| (Emit::Token(s), n);
    match action {
        Action::Keep => token(text.to_string()),
        // A lone soft hyphen comes out as a hyphen.
        Action::SoftHyphen if text.chars().all(|c| c == '\u{00AD}') => token("-".to_string()),
        Action::SoftHyphen => token(text.replace('\u{00AD}', "")),
        Action::Text(t) => token(t.to_string()),
        Action::Quotes(left) => token(latex_quotes(text, left)),
        Action::PushBack(k) => {
            let keep = n.saturating_sub(k).max(1);
            (Emit::Token(text.chars().take(keep).collect()), keep)
        }
        Action::Acronym if n == 2 => (Emit::Token(text.chars().take(1).collect()), 1),
        Action::Acronym | Action::Reduplicate => {
            (Emit::Token(text.to_string()), n.saturating_sub(1))
        }
        Action::NoBreakSpace => token(text.replace(' ', "\u{00A0}")),
        Action::Fraction => token(normalize_fraction(text)),
        Action::Currency => token(normalize_currency(text)),
        Action::Amp => token(normalize_amp(text)),
        Action::Parens => token(text.replace('(', "-LRB-").replace(')', "-RRB-")),
        Action::Phone => token(
            text.replace(' ', "\u{00A0}")
                .replace('(', "-LRB-")
                .replace(')', "-RRB-"),
        ),
        Action::Hyphens if (3..=4).contains(&n) => token("--".to_string()),
        Action::Hyphens => token(text.to_string()),
        Action::Skip | Action::Delete => (Emit::Nothing, n),
        Action::Newline => (Emit::Newline, n),
    }
}

/// CoreNLP's `latexQuotes`: straight quotes become `` ` ``/`'` (or ```` `` ````/`''`) by the guessed
/// side, curly and angle quotes map by their shape.
fn latex_quotes(text: &str, probably_left: bool) -> String {
    let (single, double) = if probably_left {
        ("`", "``")
    } else {
        ("'", "''")
    };
    let s = text.replace("&apos;", single).replace("&quot;", double);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\'' => out.push_str(single),
            '"' => out.push_str(double),
            '\u{0091}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{0092}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{0093}' | '\u{201C}' | '\u{00AB}' => out.push_str("``"),
            '\u{0094}' | '\u{201D}' | '\u{00BB}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

/// CoreNLP spells out these five composed fractions and leaves the others (`⅛`, ...) alone.
fn normalize_fraction(text: &str) -> String {
    [
        ('\u{00BC}', "1/4"),
        ('\u{00BD}', "1/2"),
        ('\u{00BE}', "3/4"),
        ('\u{2153}', "1/3"),
        ('\u{2154}', "2/3"),
    ]
    .iter()
    .fold(text.to_string(), |t, &(from, to)| t.replace(from, to))
}

/// `&amp;` (in any letter case, like CoreNLP's `(?i:&amp;)`) -> `&`.
fn normalize_amp(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let entity = tail.get(..5).filter(|e| e.eq_ignore_ascii_case("&amp;"));
        out.push('&');
        rest = &tail[if entity.is_some() { 5 } else { 1 }..];
    }
    out.push_str(rest);
    out
}

fn normalize_currency(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\u{00A2}' => out.push_str("cents"),
            '\u{00A3}' => out.push('#'),
            '\u{0080}' | '\u{00A4}' | '\u{20A0}' | '\u{20AC}' => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// One lexer rule: a pattern (in [`Lexer::mains`]), an optional trailing context (JFlex
/// `r1/r2`) and an action.
struct Rule {
    trail: Option<Pattern>,
    action: Action,
}

impl Rule {
    /// This rule's longest match at `pos` among its main pattern's match `ends` (longest first),
    /// counting the trailing context: `(token length, total length)`. Among equal totals the
    /// longest token (JFlex keeps r1 as long as possible).
    fn longest(
        &self,
        text: &[char],
        pos: usize,
        mut ends: impl Iterator<Item = usize>,
        scratch: &mut Scratch,
        trail_buf: &mut Vec<usize>,
    ) -> Option<(usize, usize)> {
        let Some(trail) = &self.trail else {
            return ends.next().map(|e| (e - pos, e - pos));
        };
        let mut found: Option<(usize, usize)> = None;
        for end in ends {
            if let Some(extra) = trail.longest(text, end, scratch, trail_buf) {
                let total = end - pos + extra;
                if found.is_none_or(|(_, t)| total > t) {
                    found = Some((end - pos, total));
                }
            }
        }
        found
    }
}

/// Keeps rule `i`'s match `(token length, total length)` in `best` (rule, token length, total)
/// if it is longer in total: ties go to the earlier rule.
fn keep_longest(best: &mut Option<(usize, usize, usize)>, i: usize, found: Option<(usize, usize)>) {
    if let Some((len, total)) = found {
        if best.is_none_or(|(_, _, t)| total > t) {
            *best = Some((i, len, total));
        }
    }
}

struct Lexer {
    rules: Vec<Rule>,
    /// The rules' patterns, rule i as pattern i: one scan finds where each of them matches.
    mains: PatternSet,
}

impl Lexer {
    /// The rule JFlex would pick at `pos`: the longest match counting trailing context, ties to the
    /// earlier rule. Returns the rule's index and the token length (without the trailing context).
    fn best(
        &self,
        text: &[char],
        pos: usize,
        scratch: &mut Scratch,
        bufs: &mut (Vec<(usize, u128)>, Vec<usize>),
    ) -> (usize, usize) {
        let (matches, trail_buf) = bufs;
        self.mains.scan(text, pos, scratch, matches);
        let matched = matches.iter().fold(0u128, |all, &(_, m)| all | m);
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let bit = 1u128 << i;
            if matched & bit == 0 {
                continue;
            }
            let ends = matches.iter().rev().filter(|(_, m)| m & bit != 0);
            let found = rule.longest(text, pos, ends.map(|&(e, _)| e), scratch, trail_buf);
            keep_longest(&mut best, i, found);
        }
        // The last rule matches any single character, so `best` is always set.
        match best {
            Some((rule, len, _)) => (rule, len),
            None => (self.rules.len() - 1, 1),
        }
    }
}

fn lexer() -> &'static Lexer {
    static LEXER: OnceLock<Lexer> = OnceLock::new();
    LEXER.get_or_init(build_lexer)
}

/// Macros of CoreNLP 3.4.1's `PTBLexer.flex`, as far as this port needs them.
const MACROS: &[(&str, &str)] = &[
    (
        "SGML",
        r"\<([!\?][A-Za-z\-][^>\r\n]*|\/?[A-Za-z][A-Za-z0-9_:\.\-]*([ ]+([A-Za-z][A-Za-z0-9_:\.\-]*|[A-Za-z][A-Za-z0-9_:\.\-]*[ ]*=[ ]*('[^'\r\n]*'|\u0022[^\u0022\r\n]*\u0022)))*[ ]*\/?)\>",
    ),
    (
        "SPMDASH",
        r"&(MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]",
    ),
    ("SPAMP", r"&amp;"),
    ("SPPUNC", r"&(HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"),
    ("SPLET", r"&[aeiouAEIOU](acute|grave|uml);"),
    ("SPACE", r"[ \t\u00A0\u2000-\u200A\u3000]"),
    ("SPACES", r"{SPACE}+"),
    ("NEWLINE", r"\r|\r?\n|\u2028|\u2029|\u000B|\u000C|\u0085"),
    ("SPACENL", r"{SPACE}|{NEWLINE}"),
    ("SPACENLS", r"{SPACENL}+"),
    ("SENTEND", r"{SPACENL}({SPACENL}|[:uppercase:]|{SGML})"),
    ("DIGIT", r"[:digit:]|[\u07C0-\u07C9]"),
    ("DATE", r"{DIGIT}{1,2}[\-\/]{DIGIT}{1,2}[\-\/]{DIGIT}{2,4}"),
    (
        "NUM",
        r"{DIGIT}+|{DIGIT}*([.:,\u00AD\u066B\u066C]{DIGIT}+)+",
    ),
    ("NUMBER", r"[\-+]?{NUM}"),
    (
        "SUBSUPNUM",
        r"[\u207A\u207B\u208A\u208B]?([\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)",
    ),
    (
        "FRAC",
        r"({DIGIT}{1,4}[- \u00A0])?{DIGIT}{1,4}(\\?\/|\u2044){DIGIT}{1,4}",
    ),
    ("FRAC2", r"[\u00BC\u00BD\u00BE\u2153-\u215E]"),
    ("DOLSIGN", r"[A-Z]*\$|#"),
    (
        "DOLSIGN2",
        r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
    ),
    (
        "LETTER",
        r"[:letter:]|{SPLET}|[\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD]",
    ),
    (
        "WORD",
        r"{LETTER}({LETTER}|{DIGIT})*([.!?]{LETTER}({LETTER}|{DIGIT})*)*",
    ),
    ("ALNUM", r"[:letter:]|[:digit:]"),
    (
        "THING",
        r"([dDoOlL]{APOSETCETERA}{ALNUM})?{ALNUM}+({HYPHEN}([dDoOlL]{APOSETCETERA}{ALNUM})?{ALNUM}+)*",
    ),
    ("THINGA", r"[A-Z]+(([+&]|{SPAMP})[A-Z]+)+"),
    (
        "THING3",
        r"[A-Za-z0-9]+(-[A-Za-z]+){0,2}(\\?\/[A-Za-z0-9]+(-[A-Za-z]+){0,2}){1,2}",
    ),
    ("APOS", r"['\u0092\u2019]|&apos;"),
    ("APOSETCETERA", r"{APOS}|[`\u0091\u2018\u201B]"),
    (
        "HTHING",
        r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(-([A-Za-z0-9\u00AD]+|{ACRO2}\.))+",
    ),
    ("REDAUX", r"{APOS}([msdMSD]|re|ve|ll)"),
    ("SWORD", r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"),
    ("SREDAUX", r"n{APOSETCETERA}t"),
    (
        "APOWORD",
        r"{APOS}n{APOS}?|[lLdDjJ]{APOS}|Dunkin{APOS}|somethin{APOS}|ol{APOS}|{APOS}em|[A-HJ-XZn]{APOSETCETERA}[:letter:]{2}[:letter:]*|{APOS}[2-9]0s|{APOS}till?|[:letter:][:letter:]*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z][:letter:]*|{APOS}cause|cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{APOSETCETERA}o",
    ),
    ("APOWORD2", r"y{APOS}"),
    (
        "FULLURL",
        r"https?:\/\/[^ \t\n\f\r\u0022<>|()\u007B\u007D]+[^ \t\n\f\r\u0022<>|.!?()\u007B\u007D,-]",
    ),
    (
        "LIKELYURL",
        r"((www\.([^ \t\n\f\r\u0022<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(([^ \t\n\f\r\u0022`'<>|.!?(){},-_$]+\.)+(com|net|org|edu)))(\/[^ \t\n\f\r\u0022<>|()]+[^ \t\n\f\r\u0022<>|.!?(){},-])?",
    ),
    (
        "EMAIL",
        r"(&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\u0022<>|()\u00A0\u007B\u007D]*@([^ \t\n\f\r\u0022<>|()\u007B\u007D.\u00A0]+\.)*([^ \t\n\f\r\u0022<>|()\u007B\u007D.\u00A0]+)(&gt;|>)?",
    ),
    ("TWITTER", r"@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+"),
    (
        "FILENAME",
        r"[A-Za-z0-9]+(\.[A-Za-z0-9]+)*\.(bat|bmp|bz2|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)",
    ),
    (
        "ABMONTH",
        r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec",
    ),
    ("ABDAYS", r"Mon|Tue|Tues|Wed|Thu|Thurs|Fri"),
    (
        "ABSTATE",
        r"Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo",
    ),
    (
        "ABCOMP",
        r"Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys",
    ),
    ("ABNUM", r"tel|est|ext|sq"),
    ("ABPTIT", r"Jr|Sr|Bros|(Ed|Ph)\.D|Blvd|Rd|Esq"),
    (
        "ABBREV1",
        r"({ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\.",
    ),
    (
        "ACRO",
        r"[A-Za-z](\.[A-Za-z])*|(Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(U\.K|U\.S\.S\.R)",
    ),
    (
        "ACRO2",
        r"[A-Za-z](\.[A-Za-z])+|(Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(U\.K|U\.S\.S\.R)",
    ),
    (
        "ABTITLE",
        r"Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc",
    ),
    ("ABCOMP2", r"Invt|Elec|Natl|M[ft]g"),
    (
        "ABBREV4",
        r"{ABTITLE}|vs|[v]|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|{ACRO}|{ABCOMP2}",
    ),
    ("ABBREV2", r"{ABBREV4}\."),
    ("ACRONYM", r"{ACRO}\."),
    ("ABBREV3", r"(ca|figs?|prop|nos?|art|pp|op)\."),
    (
        "SENTSTART",
        r"[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\.|[M]s\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou",
    ),
    (
        "PHONE",
        r"(\([0-9]{3}\)[ \u00A0]?|[0-9]{3}[\- \u00A0.])[0-9]{3}[\- \u00A0.][0-9]{4}",
    ),
    ("HYPHEN", r"[-_\u058A\u2010\u2011]"),
    ("LDOTS", r"\.{3,5}|(\.[ \u00A0]){2,4}\.|[\u0085\u2026]"),
    ("FNMARKS", r"@+|#+|_+"),
    ("ASTS", r"\*+|(\\\*){1,3}"),
    ("INSENTP", r"[,;:]"),
    (
        "QUOTES",
        r"{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A\u00AB\u00BB]{1,2}",
    ),
    ("DBLQUOT", r"\u0022|&quot;"),
    (
        "TBSPEC",
        r"-(RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(&|&amp;)P-500|S(&|&amp;)Ls|Cap{APOS}n|c{APOS}est",
    ),
    ("TBSPEC2", r"{APOS}[0-9][0-9]"),
    ("SMILEY", r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\\u007B@\|\[\]]"),
    (
        "ASIANSMILEY",
        r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)",
    ),
    (
        "MISCSYMBOL",
        r"[+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u2020-\u2023\u2030-\u2038\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2016\u2017\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]",
    ),
];

/// The rules in `PTBLexer.flex` order: (pattern, trailing context, action).
const RULES: &[(&str, Option<&str>, Action)] = &[
    (r"c[+][+]|(c|f)#", None, Action::Keep),
    (r"cannot|{APOS}twas", None, Action::PushBack(3)),
    (
        r"{APOS}tis|gonna|gotta|lemme|gimme|wanna",
        None,
        Action::PushBack(2),
    ),
    (r"{SGML}", None, Action::NoBreakSpace),
    (r"{SPMDASH}", None, Action::Text("--")),
    (r"{SPAMP}", None, Action::Text("&")),
    (r"{SPPUNC}", None, Action::Keep),
    (r"{WORD}", Some(r"{REDAUX}"), Action::SoftHyphen),
    (r"{SWORD}", Some(r"{SREDAUX}"), Action::SoftHyphen),
    (r"{WORD}", None, Action::SoftHyphen),
    (r"{APOWORD}", None, Action::Keep),
    (r"{APOWORD2}", Some(r"[:letter:]"), Action::Keep),
    (r"{FULLURL}", None, Action::Keep),
    (r"{LIKELYURL}", None, Action::Keep),
    (r"{EMAIL}", None, Action::Keep),
    (r"{TWITTER}", None, Action::Keep),
    (r"{REDAUX}", Some(r"[^A-Za-z]"), Action::Quotes(false)),
    (r"{SREDAUX}", None, Action::Quotes(false)),
    (r"{DATE}", None, Action::Keep),
    (r"{NUMBER}", None, Action::SoftHyphen),
    (r"{SUBSUPNUM}", None, Action::Keep),
    (r"{FRAC}", None, Action::NoBreakSpace),
    (r"{FRAC2}", None, Action::Fraction),
    (r"{TBSPEC}", None, Action::Amp),
    (r"{THING3}", None, Action::Keep),
    (r"{DOLSIGN}", None, Action::Keep),
    (r"{DOLSIGN2}", None, Action::Currency),
    (
        r"{ACRONYM}",
        Some(r"{SPACENLS}({SENTSTART}){SPACENL}"),
        Action::Acronym,
    ),
    (r"{ABBREV3}", Some(r"{SPACENL}?[:digit:]"), Action::Keep),
    (r"(pt[eyEY]|co)\.", Some(r"{SPACE}(ltd|lim)"), Action::Keep),
    (r"{ABBREV1}", Some(r"{SENTEND}"), Action::Reduplicate),
    (
        r"{ABBREV1}",
        Some(r"([^\u0000]|\u0000)([^\u0000]|\u0000)"),
        Action::Keep,
    ),
    (r"{ABBREV1}", None, Action::Reduplicate),
    (r"{ABBREV2}", None, Action::Keep),
    (r"{ABBREV4}", Some(r"{SPACE}"), Action::Keep),
    (r"{ACRO}", Some(r"{SPACENL}"), Action::Keep),
    (r"{TBSPEC2}", Some(r"{SPACENL}"), Action::Keep),
    (
        r"{FILENAME}",
        Some(r"{SPACENL}|[.?!,\u0022'<]"),
        Action::Keep,
    ),
    (r"{WORD}\.", Some(r"{INSENTP}"), Action::SoftHyphen),
    (r"{PHONE}", None, Action::Phone),
    (r"{DBLQUOT}", Some(r"[A-Za-z0-9$]"), Action::Quotes(true)),
    (r"{DBLQUOT}", None, Action::Quotes(false)),
    (r"<|&lt;", None, Action::Text("<")),
    (r">|&gt;", None, Action::Text(">")),
    (r"{SMILEY}", Some(r"[^A-Za-z0-9]"), Action::Parens),
    (r"{ASIANSMILEY}", None, Action::Parens),
    (r"\{", None, Action::Text("-LCB-")),
    (r"\}", None, Action::Text("-RCB-")),
    (r"\[", None, Action::Text("-LSB-")),
    (r"\]", None, Action::Text("-RSB-")),
    (r"\(", None, Action::Text("-LRB-")),
    (r"\)", None, Action::Text("-RRB-")),
    (r"\-+", None, Action::Hyphens),
    (r"{LDOTS}", None, Action::Text("...")),
    (r"{FNMARKS}", None, Action::Keep),
    (r"{ASTS}", None, Action::Keep),
    (r"{INSENTP}", None, Action::Keep),
    (r"[?!]+", None, Action::Keep),
    (
        r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]",
        None,
        Action::Keep,
    ),
    (r"=", None, Action::Keep),
    (r"\/", None, Action::Keep),
    (r"{HTHING}\.", Some(r"{INSENTP}"), Action::SoftHyphen),
    (r"{HTHING}", None, Action::SoftHyphen),
    (r"{THING}\.", Some(r"{INSENTP}"), Action::Keep),
    (r"{THING}", None, Action::Keep),
    (r"{THINGA}\.", Some(r"{INSENTP}"), Action::Amp),
    (r"{THINGA}", None, Action::Amp),
    (
        r"'",
        Some(r"[A-Za-z][^ \t\n\r\u00A0]"),
        Action::Quotes(true),
    ),
    (r"{REDAUX}", None, Action::Quotes(false)),
    (r"{QUOTES}", None, Action::Quotes(false)),
    (r"<<|>>", None, Action::Keep),
    (r"{MISCSYMBOL}", None, Action::Keep),
    (
        r"\u0000|{SPACES}|[\u200B\u200E-\u200F\uFEFF]",
        None,
        Action::Skip,
    ),
    (r"{NEWLINE}", None, Action::Newline),
    (r"&nbsp;", None, Action::Skip),
    (r"[^\u0000]|\u0000", None, Action::Delete),
];

fn build_lexer() -> Lexer {
    let macros: HashMap<&str, &str> = MACROS.iter().copied().collect();
    let rules = RULES
        .iter()
        .map(|&(_, trail, action)| Rule {
            trail: trail.map(|t| Pattern::new(t, &macros)),
            action,
        })
        .collect();
    let mains = RULES
        .iter()
        .map(|&(main, _, _)| Pattern::new(main, &macros))
        .collect();
    Lexer {
        rules,
        mains: PatternSet::new(mains),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_rules_compile() {
        assert!(lexer().rules.len() == RULES.len());
    }

    #[test]
    fn amp_entities_in_any_case() {
        assert_eq!(normalize_amp("AT&AmP;T & &amp;"), "AT&T & &");
        assert_eq!(normalize_amp("&am"), "&am");
    }

    /// The rule and length JFlex picks at `pos`, computed rule by rule with each pattern on its
    /// own (what `Lexer::best` does in one scan of all of them).
    fn best_rule_by_rule(mains: &[Pattern], text: &[char], pos: usize) -> (usize, usize) {
        let lexer = lexer();
        let mut scratch = Scratch::default();
        let (mut ends, mut trail_buf) = (Vec::new(), Vec::new());
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, (main, rule)) in mains.iter().zip(&lexer.rules).enumerate() {
            main.ends(text, pos, &mut scratch, &mut ends);
            let ends = ends.iter().rev().copied().filter(|&e| e > pos);
            let found = rule.longest(text, pos, ends, &mut scratch, &mut trail_buf);
            keep_longest(&mut best, i, found);
        }
        best.map_or((lexer.rules.len() - 1, 1), |(i, len, _)| (i, len))
    }

    #[test]
    fn one_scan_of_all_rules_picks_what_each_rule_alone_would() {
        let macros: HashMap<&str, &str> = MACROS.iter().copied().collect();
        let mains: Vec<Pattern> = RULES
            .iter()
            .map(|&(m, _, _)| Pattern::new(m, &macros))
            .collect();
        let mut texts: Vec<String> = [
            "A man's dog can't play. Mr. T. The end...",
            "U.S. The e-mail a.b@c.org, http://x.com/a?b! (c) [d] {e} 3 1/2 $5 50% \"q\" 'tis",
            "gonna cannot etc. co. ltd 555-123-4567 :-) ^_^ <b>bold</b> &amp; &lt; -- --- ½ ₤",
            "Ünïcödé ЖЁлтый 北京 — «ok» y'all rock'n'roll o'clock 'em '90s ph.d. a.k.a. cf. figs. 2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pseudo-random strings over the characters the rules care about.
        let alphabet: Vec<char> =
            "aAtTnN's.,;:-_/\\@#$%&()<>[]{}\"'` \n\t01239½ÄЖ北\u{a0}\u{ad}\u{2019}!?=+*^~|"
                .chars()
                .collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            let mut t = String::new();
            for _ in 0..40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            texts.push(t);
        }
        let lexer = lexer();
        let mut scratch = Scratch::default();
        let mut bufs = (Vec::new(), Vec::new());
        for text in &texts {
            let chars: Vec<char> = text.chars().collect();
            for pos in 0..chars.len() {
                assert_eq!(
                    lexer.best(&chars, pos, &mut scratch, &mut bufs),
                    best_rule_by_rule(&mains, &chars, pos),
                    "{text:?} at {pos}"
                );
            }
        }
    }

    #[test]
    fn lookahead_is_bounded() {
        // A token longer than the lookahead is split.
        let long = "x".repeat(MAX_LOOKAHEAD + 44);
        assert_eq!(
            ptb_tokenize(&long),
            vec![vec!["x".repeat(MAX_LOOKAHEAD), "x".repeat(44)]]
        );
        // Every `a` could start an e-mail address reaching the end: each used to be scanned to
        // the end (quadratic; 20,000 pairs took minutes). Now this is instant.
        let text = "a,".repeat(20_000);
        let tokens = &ptb_tokenize(&text)[0];
        assert_eq!(tokens.len(), 40_000);
        assert_eq!((tokens[0].as_str(), tokens[1].as_str()), ("a", ","));
    }

    #[test]
    fn ordinary_captions() {
        assert_eq!(
            tokenize("A man is riding a horse."),
            "a man is riding a horse"
        );
        assert_eq!(
            tokenize("I don't know, it's the dog's bone!"),
            "i do n't know it 's the dog 's bone"
        );
        assert_eq!(
            tokenize("A well-known 3.5 (big) U.S. dog..."),
            "a well-known 3.5 -lrb- big -rrb- u.s. dog"
        );
    }
}
