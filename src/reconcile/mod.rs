//! Converging the host to a project: translate services into containers, observe what
//! runs, execute the planner's steps in dependency order, gate updates on health and roll
//! back, and record each generation.

pub mod translate;
