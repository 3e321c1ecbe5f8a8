//! Webhook templates: the YAML schema (`spec`), references to secrets (`refs`), turning a
//! file into a validated runtime [`Template`] (`load`), errors with `file:line:col`
//! (`error`), the live set of templates swapped atomically (`registry`), and the folder
//! watcher that feeds it (`watcher`).

pub mod error;
pub mod load;
pub mod model;
pub mod refs;
pub mod registry;
pub mod spec;
pub mod watcher;

pub use error::TemplateError;
pub use load::Loader;
pub use model::Template;
pub use registry::{Entry, Registry, Snapshot, State};
