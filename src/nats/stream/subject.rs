//! Subject matching with NATS's wildcards (`*` one token, `>` the rest), as nats-server
//! decides which stream holds a subject and which subjects of two streams overlap.

/// Whether every subject `subject` matches is also matched by `pattern` (both valid subjects,
/// either may hold wildcards). `orders.>` covers `orders.new` and `orders.*`; `orders.*` does
/// not cover `orders.>`.
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject is matched by both `a` and `b`: what nats-server refuses between the
/// subjects of two streams (error 10065).
pub fn collide(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(s), Some(t)) if s == "*" || t == "*" || s == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
