//! Webhook templates: the YAML schema (`spec`), references to secrets (`refs`), turning a
//! file into a validated runtime [`Template`] (`load`), errors with `file:line:col`
//! (`error`), and the live set of templates swapped atomically (`registry`), which the
//! folder watcher (`crate::watch`) feeds.

pub mod error;
pub mod load;
pub mod model;
pub mod refs;
pub mod registry;
pub mod spec;

pub use error::TemplateError;
pub use load::Loader;
pub use model::Template;
pub use registry::{Entry, Registry, Snapshot, State};
