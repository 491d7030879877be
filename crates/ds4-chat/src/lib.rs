//! ds4-chat
