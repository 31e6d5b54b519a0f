//! The set of stage implementations a binary knows about.

use crate::stage::Stage;

/// Stage implementations by kind. Registration order is the order of `lpeft --help`.
pub struct Registry {
    stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Registry {
    /// Panics if two stages share a kind: that is a programming error in the binary.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Registry {
        let mut kinds: Vec<&str> = stages.iter().map(|s| s.kind()).collect();
        kinds.sort_unstable();
        if let Some(w) = kinds.windows(2).find(|w| w[0] == w[1]) {
            panic!("two stages registered with kind `{}`", w[0]);
        }
        Registry { stages }
    }

    pub fn get(&self, kind: &str) -> Option<(usize, &dyn Stage)> {
        self.stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.kind() == kind)
            .map(|(i, s)| (i, s.as_ref()))
    }

    pub fn by_index(&self, i: usize) -> &dyn Stage {
        self.stages[i].as_ref()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.kind()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Stage> {
        self.stages.iter().map(|s| s.as_ref())
    }
}
