//! The allow-list: which globals a pickle may reference. Everything else is refused at the opcode
//! that names it, before any object is built.

use std::collections::{HashMap, HashSet};

use crate::value::{Global, GlobalKind};

/// The globals a pickle may reference, beyond the numpy and Python built-ins the reader itself
/// understands (arrays, dtypes, scalars, sets, ordered dicts, `copyreg` helpers).
///
/// Classes added here are rebuilt as inert [`crate::Object`]s: their arguments and state are
/// kept as data, and none of their code runs (there is no Python here to run it).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    classes: HashSet<(String, String)>,
    constructors: HashSet<(String, String)>,
    module_aliases: HashMap<String, String>,
}

impl AllowList {
    /// An allow-list with only the built-ins.
    pub fn new() -> AllowList {
        AllowList::default()
    }

    /// Allows instances of `module.name` (use the canonical module path).
    pub fn class(mut self, module: &str, name: &str) -> AllowList {
        self.classes.insert((module.to_string(), name.to_string()));
        self
    }

    /// Allows a module-level function `module.name(cls, *args)` that only creates an instance
    /// of `cls` (the shape of `copyreg.__newobj__`, and of scikit-learn's `newObj` for its trees).
    pub fn constructor(mut self, module: &str, name: &str) -> AllowList {
        self.constructors
            .insert((module.to_string(), name.to_string()));
        self
    }

    /// Treats module `old` as `canonical` (for files written by older library versions that
    /// used other module paths, e.g. `sklearn.svm.classes` for `sklearn.svm._classes`).
    pub fn module_alias(mut self, old: &str, canonical: &str) -> AllowList {
        self.module_aliases
            .insert(old.to_string(), canonical.to_string());
        self
    }

    /// Resolves a global, or `None` if it is not allowed.
    pub(crate) fn resolve(&self, module: &str, name: &str) -> Option<Global> {
        let module = canonical_builtin_module(module);
        let module = self
            .module_aliases
            .get(module)
            .map(String::as_str)
            .unwrap_or(module);
        let key = (module.to_string(), name.to_string());
        let kind = builtin_kind(module, name).or_else(|| {
            if self.classes.contains(&key) {
                Some(GlobalKind::Class)
            } else if self.constructors.contains(&key) {
                Some(GlobalKind::NewObj)
            } else {
                None
            }
        })?;
        Some(Global {
            module: module.to_string(),
            name: name.to_string(),
            kind,
        })
    }
}

/// Python 2 and numpy 1.x spellings of modules mapped to one canonical name.
fn canonical_builtin_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "numpy.core.multiarray" => "numpy._core.multiarray",
        "numpy.core.numeric" => "numpy._core.numeric",
        "sklearn.externals.joblib.numpy_pickle" => "joblib.numpy_pickle",
        other => other,
    }
}

fn builtin_kind(module: &str, name: &str) -> Option<GlobalKind> {
    Some(match (module, name) {
        ("numpy._core.multiarray", "_reconstruct") => GlobalKind::NumpyReconstruct,
        ("numpy._core.multiarray", "scalar") => GlobalKind::NumpyScalar,
        ("numpy._core.numeric", "_frombuffer") => GlobalKind::NumpyFromBuffer,
        ("numpy", "dtype") => GlobalKind::NumpyDType,
        ("numpy", "ndarray") => GlobalKind::NumpyNdarray,
        ("joblib.numpy_pickle", "NumpyArrayWrapper") => GlobalKind::JoblibArrayWrapper,
        ("_codecs", "encode") => GlobalKind::CodecsEncode,
        ("copyreg", "_reconstructor") => GlobalKind::CopyregReconstructor,
        ("copyreg", "__newobj__") => GlobalKind::NewObj,
        ("collections", "OrderedDict") | ("builtins", "dict") => GlobalKind::Dict,
        ("builtins", "set") | ("builtins", "frozenset") => GlobalKind::Set,
        ("builtins", "list") => GlobalKind::List,
        ("builtins", "bytearray") | ("builtins", "bytes") => GlobalKind::ByteArray,
        ("builtins", "object") => GlobalKind::Object,
        ("builtins", "slice") | ("builtins", "complex") => GlobalKind::Inert,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_builtins_are_not_resolved() {
        let allow = AllowList::new();
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("__builtin__", "eval"),
            ("subprocess", "Popen"),
            ("numpy", "load"),
            ("numpy.testing._private.utils", "runstring"),
        ] {
            assert!(allow.resolve(m, n).is_none(), "{m}.{n} must be refused");
        }
    }

    #[test]
    fn aliases_and_numpy_1_paths_resolve_to_canonical_names() {
        let allow = AllowList::new()
            .class("sklearn.svm._classes", "OneClassSVM")
            .module_alias("sklearn.svm.classes", "sklearn.svm._classes");
        let g = allow.resolve("sklearn.svm.classes", "OneClassSVM").unwrap();
        assert_eq!(g.qualified(), "sklearn.svm._classes.OneClassSVM");
        let g = allow
            .resolve("numpy.core.multiarray", "_reconstruct")
            .unwrap();
        assert_eq!(g.kind, GlobalKind::NumpyReconstruct);
        assert!(allow.resolve("sklearn.svm._classes", "SVC").is_none());
    }
}
