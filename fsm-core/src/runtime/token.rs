//! Task tokens: how the outside world answers a waiting state (Step Functions'
//! `.waitForTaskToken`).

use core::fmt;

use crate::ExecutionId;

/// The token a waiting state's step hands out (to a carrier, a person, another service),
/// which completes or fails the wait.
///
/// It names one execution and one entry into the waiting state (its step and attempt), and
/// carries 128 bits from the operating system's secure random source, so it cannot be
/// guessed. Its text form (`Display`, and [`FromStr`](core::str::FromStr) to read it back) is
/// what travels: `ft1.<execution>.<step>.<attempt>.<secret>`, the execution spelt as
/// [`ExecutionId`] prints it (tokens handed out by earlier versions, with the execution's 32
/// digits unhyphenated, still read back).
///
/// Whatever answers a wait takes the token in any form ([`AsTaskToken`]): the `TaskToken` a
/// step received, or its text as a webhook receives it (`&str`, `String`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TaskToken {
    pub(crate) execution: ExecutionId,
    pub(crate) step: u32,
    pub(crate) attempt: u32,
    pub(crate) secret: u128,
}

impl TaskToken {
    /// A new token for the wait at `step`, `attempt` of `execution`.
    pub(crate) fn generate(
        execution: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(TaskToken {
            execution,
            step,
            attempt,
            secret: u128::from_le_bytes(bytes),
        })
    }

    /// The execution whose wait it answers.
    pub fn execution(&self) -> ExecutionId {
        self.execution
    }

    /// The SHA-256 of the secret part, as stores keep it (64 hexadecimal digits): reading a
    /// store, or a backup of it, does not give the secret, as a password-reset token's hash
    /// does not give the token. (The secret is 128 random bits: a fast hash is enough, there
    /// is nothing to guess.)
    #[cfg(feature = "durable")]
    pub(crate) fn secret_hash(&self) -> String {
        hash_secret(self.secret)
    }
}

/// The SHA-256 of a token's secret (its 16 bytes, big-endian, as its text shows them), in
/// lowercase hexadecimal.
#[cfg(feature = "durable")]
pub(crate) fn hash_secret(secret: u128) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(secret.to_be_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        use core::fmt::Write as _;
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Whether two strings are equal, in a time that depends on their lengths only: a stored
/// secret's hash is compared without telling, by how long the comparison took, how much of it
/// matched.
#[cfg(feature = "durable")]
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

impl fmt::Display for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ft1.{}.{}.{}.{:032x}",
            self.execution, self.step, self.attempt, self.secret
        )
    }
}

impl fmt::Debug for TaskToken {
    /// Without the secret: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskToken")
            .field("execution", &self.execution)
            .field("step", &self.step)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl core::str::FromStr for TaskToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let mut parts = s.split('.');
        let (Some("ft1"), Some(execution), Some(step), Some(attempt), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let hex = |t: &str| {
            if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                u128::from_str_radix(t, 16).ok()
            } else {
                None
            }
        };
        let number = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                t.parse::<u32>().ok()
            }
        };
        Ok(TaskToken {
            execution: execution.parse().map_err(|_| TokenError::Malformed)?,
            step: number(step).ok_or(TokenError::Malformed)?,
            attempt: number(attempt).ok_or(TokenError::Malformed)?,
            secret: hex(secret).ok_or(TokenError::Malformed)?,
        })
    }
}

/// A task token in any of the forms that travel: a [`TaskToken`], or its text (`&str`,
/// `String`), so that `complete(&token, ..)` takes what a step handed out and what a webhook
/// received alike.
pub trait AsTaskToken {
    /// The token, read from its text if it is text; [`TokenError::Malformed`] if it is not a
    /// token.
    fn as_task_token(&self) -> Result<TaskToken, TokenError>;
}

impl AsTaskToken for TaskToken {
    fn as_task_token(&self) -> Result<TaskToken, TokenError> {
        Ok(self.clone())
    }
}

impl AsTaskToken for str {
    fn as_task_token(&self) -> Result<TaskToken, TokenError> {
        self.parse()
    }
}

impl AsTaskToken for String {
    fn as_task_token(&self) -> Result<TaskToken, TokenError> {
        self.parse()
    }
}

impl<T: AsTaskToken + ?Sized> AsTaskToken for &T {
    fn as_task_token(&self) -> Result<TaskToken, TokenError> {
        (**self).as_task_token()
    }
}

/// Why a task token was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The text is not a task token.
    Malformed,
    /// No such token was handed out (or it names another execution or wait than the one it
    /// was handed out for).
    Forged,
    /// The token was already completed or failed.
    AlreadyUsed,
    /// The wait ran past its timeout before the token was answered.
    TimedOut,
    /// The execution is no longer in that wait (it moved on: its step failed, or it was
    /// retried with a new token).
    Stale,
    /// An operator cancelled the execution: its waits answer nothing.
    Cancelled,
    /// The token answers a wait in state `waiting`, and was completed as `expected`.
    WrongState {
        /// The state named by the completion.
        expected: &'static str,
        /// The state the execution waits in.
        waiting: String,
    },
    /// The execution's stored data could not be read or written.
    Execution(String),
    /// The store could not be reached (the database is away): nothing was answered; the
    /// same answer can be given again later.
    Unavailable(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("not a task token"),
            TokenError::Forged => f.write_str("no such task token was handed out"),
            TokenError::AlreadyUsed => f.write_str("the task token was already used"),
            TokenError::TimedOut => f.write_str("the wait timed out before the token came"),
            TokenError::Stale => f.write_str("the execution is no longer in that wait"),
            TokenError::Cancelled => f.write_str("the execution was cancelled"),
            TokenError::WrongState { expected, waiting } => write!(
                f,
                "the token answers a wait in `{waiting}`, not in `{expected}`"
            ),
            TokenError::Execution(message) => f.write_str(message),
            TokenError::Unavailable(message) => {
                write!(
                    f,
                    "the store is unavailable, nothing was answered: {message}"
                )
            }
        }
    }
}

impl std::error::Error for TokenError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_from_their_text_and_hide_their_secret_in_debug() {
        let t = TaskToken::generate(ExecutionId::from_u128(42 << 64 | 7), 3, 2).unwrap();
        let text = t.to_string();
        assert_eq!(text.parse::<TaskToken>(), Ok(t.clone()));
        // One spelling of the execution everywhere: as `ExecutionId` prints it.
        assert!(
            text.starts_with(&format!("ft1.{}.3.2.", t.execution)),
            "{text}"
        );
        // Tokens of earlier versions spelt it without hyphens; they still read back.
        let old = text.replace(
            &t.execution.to_string(),
            &format!("{:032x}", t.execution.as_u128()),
        );
        assert_ne!(old, text);
        assert_eq!(old.parse::<TaskToken>(), Ok(t.clone()));
        assert_eq!(t.as_task_token(), Ok(t.clone()));
        assert_eq!(AsTaskToken::as_task_token(&&text), Ok(t.clone()));
        assert_eq!(text.as_str().as_task_token(), Ok(t.clone()));
        assert!(!format!("{t:?}").contains(&format!("{:032x}", t.secret)));
        let other = TaskToken::generate(t.execution, 3, 2).unwrap();
        assert_ne!(t.secret, other.secret);
        for bad in [
            "",
            "ft1",
            &text[..text.len() - 1],
            &text.replace("ft1", "ft2"),
            &format!("{text}.0"),
            &text.replace(".3.", ".-3."),
            &text.replace(".3.", ".+3."),
            &text.replace(".3.", "..").to_string(),
        ] {
            assert_eq!(
                bad.parse::<TaskToken>(),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }
}
