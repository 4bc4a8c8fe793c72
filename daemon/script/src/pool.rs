//! Sandboxed states built ahead of their runs, a few per flow version.
//!
//! Why: building a sandbox (a Lua state, its trimmed libraries, refusals and prelude) and
//! loading a flow's chunk is most of what the engine does before a flow's first line runs. A
//! fresh state per run stays the rule; this only moves the building off the run's path. Each
//! flow version ([`crate::FlowDefinition`]) keeps at most [`PREBUILT_STATES_PER_FLOW`] states,
//! built for the limits of its latest run, each handed to one run and dropped with it. One
//! shared builder thread refills the pools, between runs (it waits up to
//! [`REFILL_DEFER_MS_MAX`] for the runs in progress to end); a run that finds its pool empty
//! builds its own state on the spot, exactly as a pre-built one would have been built.
//!
//! What is pre-built is what does not depend on the run: the sandbox, its limits and the
//! flow's loaded chunk. The run's stop flag, `math.random` seed and [`crate::RunContext`] are
//! bound when the run takes the state ([`Prebuilt::bind_with_chunk`]), and API modules, which
//! hold the run's context, are registered after that.

use std::fmt;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use crate::error::ScriptError;
use crate::sandbox::{Limits, Prebuilt};

/// States kept ready per flow version.
pub const PREBUILT_STATES_PER_FLOW: usize = 2;

/// Stack size of the builder thread, in bytes (it only builds states and loads chunks).
const BUILDER_STACK_BYTES: usize = 1024 * 1024;

/// Longest the builder waits for runs in progress to end before it builds a state anyway, in
/// milliseconds.
pub const REFILL_DEFER_MS_MAX: u64 = 250;

/// The pre-built states of one flow version. Clones share the states.
#[derive(Clone, Default)]
pub(crate) struct StatePool(Arc<PoolInner>);

#[derive(Default)]
struct PoolInner {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// What states are built for: the latest run's limits and the flow's chunk.
    recipe: Option<Recipe>,
    ready: Vec<Prebuilt>,
    /// A refill is queued or running on the builder thread.
    refilling: bool,
}

#[derive(Clone)]
struct Recipe {
    limits: Limits,
    chunk_name: Arc<str>,
    bytecode: Arc<[u8]>,
}

impl fmt::Debug for StatePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatePool")
            .field("ready", &self.0.lock().ready.len())
            .finish()
    }
}

/// States are not part of what a definition is: two definitions are equal by their content.
impl PartialEq for StatePool {
    fn eq(&self, _other: &StatePool) -> bool {
        true
    }
}

impl Eq for StatePool {}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StatePool {
    /// A state for one run of the flow `chunk_name`/`bytecode` within `limits`: a pre-built one
    /// when the pool holds one built for these limits, otherwise one built now. Either way the
    /// pool is then refilled in the background.
    pub(crate) fn take(
        &self,
        chunk_name: &str,
        bytecode: &Arc<[u8]>,
        limits: &Limits,
    ) -> Result<Prebuilt, ScriptError> {
        let taken = {
            let mut slots = self.0.lock();
            let same = slots.recipe.as_ref().is_some_and(|r| r.limits == *limits);
            if !same {
                slots.ready.clear();
                slots.recipe = Some(Recipe {
                    limits: limits.clone(),
                    chunk_name: chunk_name.into(),
                    bytecode: bytecode.clone(),
                });
            }
            let taken = slots.ready.pop();
            if !slots.refilling && slots.ready.len() < PREBUILT_STATES_PER_FLOW {
                slots.refilling = request_refill(Arc::downgrade(&self.0));
            }
            taken
        };
        match taken {
            Some(prebuilt) => Ok(prebuilt),
            None => Prebuilt::build_for(chunk_name, bytecode, limits),
        }
    }

    /// How many states are ready (for tests and the benchmark).
    pub(crate) fn ready(&self) -> usize {
        self.0.lock().ready.len()
    }
}

/// Queues a refill on the shared builder thread; false if there is no builder thread.
fn request_refill(pool: Weak<PoolInner>) -> bool {
    static BUILDER: OnceLock<Option<Mutex<mpsc::Sender<Weak<PoolInner>>>>> = OnceLock::new();
    let builder = BUILDER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Weak<PoolInner>>();
        let spawned = thread::Builder::new()
            .name("cardd-lua-states".to_owned())
            .stack_size(BUILDER_STACK_BYTES)
            .spawn(move || {
                while let Ok(pool) = receiver.recv() {
                    refill(&pool);
                }
            });
        match spawned {
            Ok(_) => Some(Mutex::new(sender)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the Lua state builder; runs build their own states");
                None
            }
        }
    });
    let Some(sender) = builder else {
        return false;
    };
    let sender = sender.lock().unwrap_or_else(PoisonError::into_inner);
    sender.send(pool).is_ok()
}

/// Builds states until the pool is full, outside its lock. A pool dropped meanwhile (its flow
/// version unloaded) is left alone; a state built for limits that changed meanwhile is dropped.
fn refill(pool: &Weak<PoolInner>) {
    loop {
        // Between runs, not beside one: on a machine with few cores, building a state while a
        // run goes competes with it. A run that keeps the machine busy longer only delays the
        // refill by the bound.
        crate::watchdog::wait_for_no_runs(Duration::from_millis(REFILL_DEFER_MS_MAX));
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let recipe = {
            let mut slots = inner.lock();
            match &slots.recipe {
                Some(recipe) if slots.ready.len() < PREBUILT_STATES_PER_FLOW => recipe.clone(),
                _ => {
                    slots.refilling = false;
                    return;
                }
            }
        };
        // The pool is not kept alive while building.
        drop(inner);
        let built = Prebuilt::build_for(&recipe.chunk_name, &recipe.bytecode, &recipe.limits);
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let mut slots = inner.lock();
        match built {
            Ok(prebuilt) => {
                let current = slots
                    .recipe
                    .as_ref()
                    .is_some_and(|r| r.limits == *prebuilt.limits());
                if current && slots.ready.len() < PREBUILT_STATES_PER_FLOW {
                    slots.ready.push(prebuilt);
                }
            }
            Err(e) => {
                tracing::warn!(chunk = %recipe.chunk_name, error = %e, "cannot pre-build a Lua state");
                slots.refilling = false;
                return;
            }
        }
    }
}
