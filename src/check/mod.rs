//! Checkers (issue 3).
