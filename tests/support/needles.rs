//! Pieces of secret values, looked for wherever a test checks that none leaked: any 16-byte
//! piece of a value is a needle, so a value cut, quoted or embedded in a longer text is found
//! too. Found in linear time (a set of pieces, one pass over the text).

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// How long a piece of a secret is.
pub const PIECE: usize = 16;

/// The pieces of some secret values, and the whole of those too short to cut.
pub struct Needles {
    pieces: HashSet<Vec<u8>>,
    whole: Vec<String>,
}

impl Needles {
    /// Any piece of each value (trimmed), a whole shorter one, and each value's base64.
    pub fn new(secrets: &[String]) -> Self {
        let mut needles = Self::pieces_of(secrets.iter().map(|s| s.trim()));
        for s in secrets {
            if s.trim().len() < PIECE {
                needles.whole.push(s.trim().to_owned());
            }
            needles.whole.push(STANDARD.encode(s));
        }
        needles
    }

    /// Only the pieces of `texts`: a text shorter than a piece is not looked for.
    pub fn pieces_of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let pieces = texts
            .into_iter()
            .flat_map(|t| t.as_bytes().windows(PIECE).map(<[u8]>::to_vec))
            .collect();
        Self {
            pieces,
            whole: Vec::new(),
        }
    }

    /// Where `text` holds a needle, with a little context around each (at most five pieces).
    pub fn find(&self, text: &str) -> Vec<String> {
        let context = |at: usize| {
            let (from, to) = (at.saturating_sub(40), (at + 60).min(text.len()));
            String::from_utf8_lossy(&text.as_bytes()[from..to]).replace('\n', " ")
        };
        let mut found: Vec<String> = text
            .as_bytes()
            .windows(PIECE)
            .enumerate()
            .filter(|(_, w)| self.pieces.contains(*w))
            .map(|(at, _)| context(at))
            .take(5)
            .collect();
        for w in self.whole.iter().filter(|w| !w.is_empty()) {
            if let Some(at) = text.find(w.as_str()) {
                found.push(context(at));
            }
        }
        found
    }
}

#[test]
fn a_piece_is_found_in_any_text_and_nothing_else_is() {
    // A seed minted here, never one written down.
    let secret = nkeys::KeyPair::new_user().seed().expect("a seed");
    let needles = Needles::new(std::slice::from_ref(&secret));
    assert!(!needles.find(&format!("x={}…", &secret[10..30])).is_empty());
    assert!(!needles.find(&STANDARD.encode(&secret)).is_empty());
    assert!(needles.find(&secret[..PIECE - 1]).is_empty());
    assert!(needles.find("nothing of it").is_empty());
    let short = Needles::new(&["hunter2".to_owned()]);
    assert!(!short.find("password hunter2").is_empty());
    assert!(
        Needles::pieces_of(["hunter2"])
            .find("password hunter2")
            .is_empty()
    );
}
