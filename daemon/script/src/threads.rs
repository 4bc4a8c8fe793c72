//! [`FlowThreads`]: the few long-lived threads runs execute on, so a run needs no thread of its
//! own.
//!
//! Each thread has the stack a run needs ([`FLOW_THREAD_STACK_BYTES`]). Threads
//! are started when a run finds none free, up to `threads_max`, and then kept: an idle thread
//! waits on a condition variable without a timeout (no wake-ups while idle) and takes the next
//! run. A run blocked in a call (waiting for an operator's answer) holds its thread, so
//! `threads_max` is also the bound on runs in progress at once; past it [`FlowThreads::spawn`]
//! refuses rather than queueing behind runs that may wait minutes. Dropping the pool lets the
//! idle threads end; busy ones end after their run.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::limits::FLOW_THREAD_STACK_BYTES;

type Task = Box<dyn FnOnce() + Send>;

/// Why a run could not be given a thread.
#[derive(Debug, thiserror::Error)]
pub enum FlowThreadsError {
    #[error("all {threads_max} flow threads are busy")]
    Busy { threads_max: usize },
    #[error("cannot start a flow thread: {0}")]
    Spawn(std::io::Error),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct Inner {
    name: String,
    threads_max: usize,
    state: Mutex<State>,
    work: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded set of long-lived threads for runs.
pub struct FlowThreads {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlowThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("FlowThreads")
            .field("name", &self.inner.name)
            .field("threads", &state.threads)
            .field("idle", &state.idle)
            .finish_non_exhaustive()
    }
}

impl FlowThreads {
    /// A pool whose threads are named `<name>-<n>`, at most `threads_max` (at least 1).
    pub fn new(name: &str, threads_max: usize) -> FlowThreads {
        FlowThreads {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                threads_max: threads_max.max(1),
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Threads started so far (busy or idle).
    pub fn threads(&self) -> usize {
        self.inner.lock().threads
    }

    /// Runs `task` on a free thread, starting one if none is free and the bound allows.
    pub fn spawn(&self, task: impl FnOnce() + Send + 'static) -> Result<(), FlowThreadsError> {
        let mut state = self.inner.lock();
        if state.idle <= state.queue.len() {
            if state.threads >= self.inner.threads_max {
                return Err(FlowThreadsError::Busy {
                    threads_max: self.inner.threads_max,
                });
            }
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name(format!("{}-{}", self.inner.name, state.threads + 1))
                .stack_size(FLOW_THREAD_STACK_BYTES)
                .spawn(move || serve(&inner))
                .map_err(FlowThreadsError::Spawn)?;
            state.threads += 1;
        }
        state.queue.push_back(Box::new(task));
        drop(state);
        self.inner.work.notify_one();
        Ok(())
    }
}

impl Drop for FlowThreads {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        self.inner.work.notify_all();
    }
}

thread_local! {
    static FLOW_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is a [`FlowThreads`] thread (with a run's stack).
pub(crate) fn on_flow_thread() -> bool {
    FLOW_THREAD.with(|f| f.get())
}

fn serve(inner: &Inner) {
    FLOW_THREAD.with(|f| f.set(true));
    let mut state = inner.lock();
    loop {
        if let Some(task) = state.queue.pop_front() {
            drop(state);
            // A panicking run loses its own answer, not the thread.
            let _ = catch_unwind(AssertUnwindSafe(task));
            state = inner.lock();
            continue;
        }
        if state.shutdown {
            state.threads -= 1;
            return;
        }
        state.idle += 1;
        state = inner.work.wait(state).unwrap_or_else(|p| p.into_inner());
        state.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits (bounded) until every started thread waits for work.
    fn wait_idle(pool: &FlowThreads) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = pool.inner.lock();
            if state.idle == state.threads {
                return;
            }
            drop(state);
            assert!(
                std::time::Instant::now() < deadline,
                "threads never became idle"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn threads_are_reused_and_bounded() {
        let pool = FlowThreads::new("test-flow", 2);
        let (done, finished) = mpsc::channel();
        for _ in 0..5 {
            let done = done.clone();
            pool.spawn(move || {
                done.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            })
            .unwrap();
            finished.recv_timeout(Duration::from_secs(10)).unwrap();
            wait_idle(&pool);
        }
        assert_eq!(
            pool.threads(),
            1,
            "one free thread serves runs one after another"
        );

        let (release, wait) = mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        for _ in 0..2 {
            let wait = wait.clone();
            let done = done.clone();
            pool.spawn(move || {
                let _ = wait.lock().unwrap().recv();
                done.send(None).unwrap();
            })
            .unwrap();
        }
        assert!(matches!(
            pool.spawn(|| {}),
            Err(FlowThreadsError::Busy { threads_max: 2 })
        ));
        release.send(()).unwrap();
        release.send(()).unwrap();
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn a_panicking_task_keeps_its_thread() {
        let pool = FlowThreads::new("test-flow", 1);
        pool.spawn(|| panic!("a run panicked")).unwrap();
        let (done, finished) = mpsc::channel();
        // The thread may still be busy with the panic; wait for it to take the next task.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let done = done.clone();
            match pool.spawn(move || done.send(()).unwrap()) {
                Ok(()) => break,
                Err(FlowThreadsError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(pool.threads(), 1);
    }
}
