//! libsvm's one-class SVM solver as scikit-learn's bundled copy runs it (`svm.cpp`): the kernel
//! matrix in single precision, the SMO iteration with second-order working-set selection,
//! shrinking with gradient reconstruction, and ρ from the free variables.
//!
//! Every step rounds as the C++ does (kernel values stored as `f32`, dot products in OpenBLAS's
//! order, the same comparisons with the same tie-breaks), so the iterates, and with them the
//! support vectors and coefficients, are libsvm's own. The kernel cache differs from libsvm's
//! in bookkeeping only: a column holds the same values whenever it is (re)computed.

use crate::numeric::dot;

/// libsvm's `TAU`: the curvature used when a pair's quadratic coefficient is not positive.
const TAU: f64 = 1e-12;

/// A kernel with its parameters, evaluated as libsvm evaluates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum KernelFn {
    /// `x · y`
    Linear,
    /// `(γ x·y + coef0)^degree`
    Poly { gamma: f64, coef0: f64, degree: i32 },
    /// `exp(−γ |x − y|²)`
    Rbf { gamma: f64 },
    /// `tanh(γ x·y + coef0)`
    Sigmoid { gamma: f64, coef0: f64 },
}

/// libsvm's integer power: repeated squaring, which rounds differently from `powi`.
fn powi(base: f64, times: i32) -> f64 {
    let mut square = base;
    let mut result = 1.0;
    let mut t = times;
    while t > 0 {
        if t % 2 == 1 {
            result *= square;
        }
        square *= square;
        t /= 2;
    }
    result
}

impl KernelFn {
    /// The kernel from a dot product, for the kernels that are a function of one.
    fn of_dot(&self, d: f64) -> f64 {
        match *self {
            KernelFn::Linear => d,
            KernelFn::Poly {
                gamma,
                coef0,
                degree,
            } => powi(gamma * d + coef0, degree),
            KernelFn::Sigmoid { gamma, coef0 } => (gamma * d + coef0).tanh(),
            KernelFn::Rbf { .. } => unreachable!("the RBF kernel is not a function of x·y"),
        }
    }

    /// `k(x, sv)` as libsvm's prediction computes it (`k_function`): the RBF kernel from the
    /// squared norm of the difference, not from precomputed norms as in training. `scratch`
    /// holds that difference (any length; it is resized).
    pub(crate) fn value(&self, x: &[f64], sv: &[f64], scratch: &mut Vec<f64>) -> f64 {
        match *self {
            KernelFn::Rbf { gamma } => {
                scratch.clear();
                scratch.extend(x.iter().zip(sv).map(|(a, b)| a - b));
                (-gamma * dot(scratch, scratch)).exp()
            }
            _ => self.of_dot(dot(x, sv)),
        }
    }
}

/// The training rows and the kernel between two of them, as libsvm's `Kernel` computes it for
/// the Gram matrix (RBF through the precomputed squared norms).
struct Rows<'a> {
    x: &'a [f64],
    n_features: usize,
    kernel: KernelFn,
    /// `x_i · x_i` for the RBF kernel, by training row; empty for the others.
    squares: Vec<f64>,
}

impl Rows<'_> {
    /// Appends `K(a, b)` for each `b` of `others`, in single precision, as [`Rows::eval`]
    /// computes each (the one-feature RBF case, the fleet's usual, without a call per entry).
    fn column_into(&self, a: usize, others: &[usize], out: &mut Vec<f32>) {
        match self.kernel {
            KernelFn::Rbf { gamma } if self.n_features == 1 => {
                let (xa, sa) = (self.x[a], self.squares[a]);
                out.extend(others.iter().map(|&b| {
                    let d = xa * self.x[b] + 0.0;
                    (-gamma * (sa + self.squares[b] - 2.0 * d)).exp() as f32
                }));
            }
            _ => out.extend(others.iter().map(|&b| self.eval(a, b) as f32)),
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.n_features..(i + 1) * self.n_features]
    }

    fn eval(&self, a: usize, b: usize) -> f64 {
        let d = dot(self.row(a), self.row(b));
        match self.kernel {
            KernelFn::Rbf { gamma } => {
                (-gamma * (self.squares[a] + self.squares[b] - 2.0 * d)).exp()
            }
            k => k.of_dot(d),
        }
    }
}

/// Marks a position without a cached column in [`OneClassQ::slot`].
const NOT_CACHED: usize = usize::MAX;

/// libsvm's `ONE_CLASS_Q`: columns of the kernel matrix in the solver's current order of the
/// variables, kept in single precision in a least-recently-used cache of bounded size.
struct OneClassQ<'a> {
    rows: Rows<'a>,
    /// Position → training row. The solver permutes variables as it shrinks the problem; the
    /// matrix follows.
    order: Vec<usize>,
    /// `K(i, i)` by position, in double precision.
    diag: Vec<f64>,
    /// Cached columns by position: a valid prefix, empty when not cached.
    cols: Vec<Vec<f32>>,
    last_use: Vec<u64>,
    clock: u64,
    /// Positions whose column is non-empty, and each position's index in it.
    cached: Vec<usize>,
    slot: Vec<usize>,
    /// Floats held, and the most that may be (at least two full columns, as libsvm keeps).
    held: usize,
    budget: usize,
}

impl<'a> OneClassQ<'a> {
    fn new(rows: Rows<'a>, l: usize, cache_bytes: f64) -> OneClassQ<'a> {
        let diag = (0..l).map(|i| rows.eval(i, i)).collect();
        // libsvm's sizing: the cache bytes as floats, less its per-column bookkeeping.
        let floats = (cache_bytes / 4.0) as usize;
        let budget = floats.saturating_sub(8 * l).max(2 * l);
        OneClassQ {
            rows,
            order: (0..l).collect(),
            diag,
            cols: vec![Vec::new(); l],
            last_use: vec![0; l],
            clock: 0,
            cached: Vec::new(),
            slot: vec![NOT_CACHED; l],
            held: 0,
            budget,
        }
    }

    /// Makes column `i` valid on `[0, len)` (libsvm's `get_Q`); read it with [`Self::col`].
    fn fetch(&mut self, i: usize, len: usize) {
        self.clock += 1;
        self.last_use[i] = self.clock;
        let have = self.cols[i].len();
        if have >= len {
            return;
        }
        let more = len - have;
        while self.held + more > self.budget {
            let Some(&victim) = self
                .cached
                .iter()
                .filter(|&&p| p != i)
                .min_by_key(|&&p| self.last_use[p])
            else {
                break;
            };
            self.held -= self.cols[victim].len();
            self.cols[victim] = Vec::new();
            self.uncache(victim);
        }
        if have == 0 {
            self.slot[i] = self.cached.len();
            self.cached.push(i);
        }
        let a = self.order[i];
        let col = &mut self.cols[i];
        col.reserve_exact(len - have);
        self.rows.column_into(a, &self.order[have..len], col);
        self.held += more;
    }

    fn col(&self, i: usize) -> &[f32] {
        &self.cols[i]
    }

    fn uncache(&mut self, p: usize) {
        let s = self.slot[p];
        self.cached.swap_remove(s);
        if let Some(&moved) = self.cached.get(s) {
            self.slot[moved] = s;
        }
        self.slot[p] = NOT_CACHED;
    }

    /// Exchanges variables `i` and `j` everywhere: their rows, diagonal entries, cached
    /// columns, and their entries within every cached column.
    fn swap(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.order.swap(i, j);
        self.diag.swap(i, j);
        self.cols.swap(i, j);
        self.last_use.swap(i, j);
        match (self.slot[i] != NOT_CACHED, self.slot[j] != NOT_CACHED) {
            (true, false) => {
                let s = self.slot[i];
                self.cached[s] = j;
                self.slot[j] = s;
                self.slot[i] = NOT_CACHED;
            }
            (false, true) => {
                let s = self.slot[j];
                self.cached[s] = i;
                self.slot[i] = s;
                self.slot[j] = NOT_CACHED;
            }
            _ => {}
        }
        let (lo, hi) = (i.min(j), i.max(j));
        let mut emptied = Vec::new();
        for &p in &self.cached {
            let col = &mut self.cols[p];
            if col.len() > hi {
                col.swap(lo, hi);
            } else if col.len() > lo {
                // The entry at `hi` was never computed: keep only the prefix still valid.
                self.held -= col.len() - lo;
                col.truncate(lo);
                if lo == 0 {
                    emptied.push(p);
                }
            }
        }
        for p in emptied {
            self.uncache(p);
        }
    }
}

/// Where a variable is relative to its box `[0, C_i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Lower,
    Upper,
    Free,
}

/// The solver's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SolverSettings {
    /// Stopping tolerance on the maximal violating pair (`tol`, libsvm's `eps`).
    pub tol: f64,
    /// Whether to shrink the active set.
    pub shrinking: bool,
    /// Iteration limit, or `None` (scikit-learn's `max_iter = -1`).
    pub max_iter: Option<u64>,
    /// Kernel cache size in bytes (`cache_size` MB).
    pub cache_bytes: f64,
}

/// A solved one-class problem.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    /// α by training row.
    pub alpha: Vec<f64>,
    /// ρ: the decision function is `Σ α_i K(x_i, x) − ρ`.
    pub rho: f64,
    /// The dual objective `½ αᵀQα`, as libsvm reports it.
    pub objective: f64,
    /// SMO iterations.
    pub iterations: u64,
    /// The iteration limit stopped the solver before it converged.
    pub timed_out: bool,
}

/// libsvm's `Solver` specialised to the one-class problem: every label is +1 and the linear
/// term is zero, so `min ½ αᵀQα` subject to `Σα = ν Σ C_i`, `0 ≤ α_i ≤ C_i`.
struct Solver<'a> {
    q: OneClassQ<'a>,
    l: usize,
    active: usize,
    alpha: Vec<f64>,
    status: Vec<Bound>,
    /// Gradient `Qα` (exact on the active set; stale outside it until reconstructed).
    grad: Vec<f64>,
    /// `Σ_{α_j = C_j} C_j Q_ij`: the gradient's part from variables at their upper bound.
    grad_bar: Vec<f64>,
    upper: Vec<f64>,
    tol: f64,
    unshrink: bool,
}

impl Solver<'_> {
    fn bound_of(alpha: f64, upper: f64) -> Bound {
        if alpha >= upper {
            Bound::Upper
        } else if alpha <= 0.0 {
            Bound::Lower
        } else {
            Bound::Free
        }
    }

    fn update_status(&mut self, i: usize) {
        self.status[i] = Solver::bound_of(self.alpha[i], self.upper[i]);
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.q.swap(i, j);
        self.status.swap(i, j);
        self.alpha.swap(i, j);
        self.grad.swap(i, j);
        self.grad_bar.swap(i, j);
        self.upper.swap(i, j);
    }

    /// Recomputes the gradient of the inactive variables from `grad_bar` and the free ones.
    fn reconstruct_gradient(&mut self) {
        let (active, l) = (self.active, self.l);
        if active == l {
            return;
        }
        for j in active..l {
            self.grad[j] = self.grad_bar[j];
        }
        let free: Vec<usize> = (0..active)
            .filter(|&j| self.status[j] == Bound::Free)
            .collect();
        // Two loop orders with the same sums (Q is symmetric): whichever touches fewer
        // columns, as libsvm chooses.
        if free.len() * l > 2 * active * (l - active) {
            for i in active..l {
                self.q.fetch(i, active);
                let qi = self.q.col(i);
                for &j in &free {
                    self.grad[i] += self.alpha[j] * f64::from(qi[j]);
                }
            }
        } else {
            for &i in &free {
                self.q.fetch(i, l);
                let qi = self.q.col(i);
                let alpha_i = self.alpha[i];
                for (g, q) in self.grad[active..l].iter_mut().zip(&qi[active..l]) {
                    *g += alpha_i * f64::from(*q);
                }
            }
        }
    }

    /// The pair to optimise next: `i` with the largest `−G_i` among variables that can grow,
    /// `j` with the largest second-order decrease of the objective among those that can
    /// shrink. `None` when the largest violation is below the tolerance.
    fn select_working_set(&mut self) -> Option<(usize, usize)> {
        let active = self.active;
        let mut gmax = f64::NEG_INFINITY;
        let mut gmax_idx = None;
        for t in 0..active {
            // `>=`: among equals the last one wins, as in libsvm.
            if self.status[t] != Bound::Upper && -self.grad[t] >= gmax {
                gmax = -self.grad[t];
                gmax_idx = Some(t);
            }
        }
        // Every variable at its upper bound: nothing can grow, and libsvm's stopping test sees
        // −∞ (its scan for the second index finds no candidate either).
        let i = gmax_idx?;
        let mut gmax2 = f64::NEG_INFINITY;
        let mut gmin_idx = None;
        let mut obj_diff_min = f64::INFINITY;
        self.q.fetch(i, active);
        let qi = self.q.col(i);
        let qd = &self.q.diag;
        for j in 0..active {
            if self.status[j] == Bound::Lower {
                continue;
            }
            let g = self.grad[j];
            let grad_diff = gmax + g;
            if g >= gmax2 {
                gmax2 = g;
            }
            if grad_diff > 0.0 {
                let quad_coef = qd[i] + qd[j] - 2.0 * f64::from(qi[j]);
                let obj_diff = if quad_coef > 0.0 {
                    -(grad_diff * grad_diff) / quad_coef
                } else {
                    -(grad_diff * grad_diff) / TAU
                };
                if obj_diff <= obj_diff_min {
                    gmin_idx = Some(j);
                    obj_diff_min = obj_diff;
                }
            }
        }
        if gmax + gmax2 < self.tol {
            return None;
        }
        Some((i, gmin_idx?))
    }

    fn be_shrunk(&self, i: usize, gmax1: f64, gmax2: f64) -> bool {
        match self.status[i] {
            Bound::Upper => -self.grad[i] > gmax1,
            Bound::Lower => self.grad[i] > gmax2,
            Bound::Free => false,
        }
    }

    /// Moves variables that are at a bound and unlikely to move to the end of the active set;
    /// once the violation is within ten times the tolerance, first restores the full problem
    /// (once) so that shrinking decisions are made on exact gradients.
    fn do_shrinking(&mut self) {
        let mut gmax1 = f64::NEG_INFINITY;
        let mut gmax2 = f64::NEG_INFINITY;
        for i in 0..self.active {
            if self.status[i] != Bound::Upper && -self.grad[i] >= gmax1 {
                gmax1 = -self.grad[i];
            }
            if self.status[i] != Bound::Lower && self.grad[i] >= gmax2 {
                gmax2 = self.grad[i];
            }
        }
        if !self.unshrink && gmax1 + gmax2 <= self.tol * 10.0 {
            self.unshrink = true;
            self.reconstruct_gradient();
            self.active = self.l;
        }
        let mut i = 0;
        while i < self.active {
            if self.be_shrunk(i, gmax1, gmax2) {
                self.active -= 1;
                while self.active > i {
                    if !self.be_shrunk(self.active, gmax1, gmax2) {
                        self.swap(i, self.active);
                        break;
                    }
                    self.active -= 1;
                }
            }
            i += 1;
        }
    }

    /// ρ: the mean gradient of the free variables, or the midpoint of the bounds the others
    /// give when none is free.
    fn calculate_rho(&self) -> f64 {
        let mut nr_free = 0usize;
        let mut ub = f64::INFINITY;
        let mut lb = f64::NEG_INFINITY;
        let mut sum_free = 0.0;
        for i in 0..self.active {
            let g = self.grad[i];
            match self.status[i] {
                // C's `max`/`min` templates: a NaN gradient propagates, as in libsvm.
                Bound::Upper => lb = if lb > g { lb } else { g },
                Bound::Lower => ub = if ub < g { ub } else { g },
                Bound::Free => {
                    nr_free += 1;
                    sum_free += g;
                }
            }
        }
        if nr_free > 0 {
            sum_free / nr_free as f64
        } else {
            (ub + lb) / 2.0
        }
    }

    /// One SMO step on the pair `(i, j)`: the analytic minimum along `α_i + α_j = const`,
    /// clipped to the box, then the gradient updates.
    fn take_step(&mut self, i: usize, j: usize) {
        let active = self.active;
        self.q.fetch(i, active);
        self.q.fetch(j, active);
        let (c_i, c_j) = (self.upper[i], self.upper[j]);
        let (old_i, old_j) = (self.alpha[i], self.alpha[j]);
        {
            let qi = self.q.col(i);
            // libsvm doubles the float entry in single precision.
            let twice = f64::from(2.0 * qi[j]);
            let mut quad_coef = self.q.diag[i] + self.q.diag[j] - twice;
            if quad_coef <= 0.0 {
                quad_coef = TAU;
            }
            let delta = (self.grad[i] - self.grad[j]) / quad_coef;
            let sum = self.alpha[i] + self.alpha[j];
            let alpha = &mut self.alpha;
            alpha[i] -= delta;
            alpha[j] += delta;
            if sum > c_i {
                if alpha[i] > c_i {
                    alpha[i] = c_i;
                    alpha[j] = sum - c_i;
                }
            } else if alpha[j] < 0.0 {
                alpha[j] = 0.0;
                alpha[i] = sum;
            }
            if sum > c_j {
                if alpha[j] > c_j {
                    alpha[j] = c_j;
                    alpha[i] = sum - c_j;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = sum;
            }
        }
        let d_i = self.alpha[i] - old_i;
        let d_j = self.alpha[j] - old_j;
        {
            let (qi, qj) = (self.q.col(i), self.q.col(j));
            for k in 0..active {
                self.grad[k] += f64::from(qi[k]) * d_i + f64::from(qj[k]) * d_j;
            }
        }
        let was_upper_i = self.status[i] == Bound::Upper;
        let was_upper_j = self.status[j] == Bound::Upper;
        self.update_status(i);
        self.update_status(j);
        for (v, was_upper, c) in [(i, was_upper_i, c_i), (j, was_upper_j, c_j)] {
            if was_upper != (self.status[v] == Bound::Upper) {
                self.q.fetch(v, self.l);
                let qv = self.q.col(v);
                if was_upper {
                    for (gb, q) in self.grad_bar.iter_mut().zip(qv) {
                        *gb -= c * f64::from(*q);
                    }
                } else {
                    for (gb, q) in self.grad_bar.iter_mut().zip(qv) {
                        *gb += c * f64::from(*q);
                    }
                }
            }
        }
    }

    fn solve(mut self, settings: &SolverSettings) -> Solution {
        let l = self.l;
        for i in 0..l {
            self.update_status(i);
        }
        for i in 0..l {
            if self.status[i] == Bound::Lower {
                continue;
            }
            self.q.fetch(i, l);
            let qi = self.q.col(i);
            let alpha_i = self.alpha[i];
            for (g, q) in self.grad.iter_mut().zip(qi) {
                *g += alpha_i * f64::from(*q);
            }
            if self.status[i] == Bound::Upper {
                let c = self.upper[i];
                for (gb, q) in self.grad_bar.iter_mut().zip(qi) {
                    *gb += c * f64::from(*q);
                }
            }
        }

        let mut iterations = 0u64;
        let mut timed_out = false;
        let every = l.min(1000);
        let mut counter = every + 1;
        loop {
            if settings.max_iter.is_some_and(|m| iterations >= m) {
                timed_out = true;
                break;
            }
            counter -= 1;
            if counter == 0 {
                counter = every;
                if settings.shrinking {
                    self.do_shrinking();
                }
            }
            let (i, j) = match self.select_working_set() {
                Some(pair) => pair,
                None => {
                    // Optimal on the active set: check on the whole problem.
                    self.reconstruct_gradient();
                    self.active = l;
                    match self.select_working_set() {
                        Some(pair) => {
                            counter = 1;
                            pair
                        }
                        None => break,
                    }
                }
            };
            iterations += 1;
            self.take_step(i, j);
        }

        let rho = self.calculate_rho();
        let objective = self
            .alpha
            .iter()
            .zip(&self.grad)
            .fold(0.0, |v, (a, g)| v + a * (g + 0.0))
            / 2.0;
        let mut alpha = vec![0.0; l];
        for (p, &row) in self.q.order.iter().enumerate() {
            alpha[row] = self.alpha[p];
        }
        Solution {
            alpha,
            rho,
            objective,
            iterations,
            timed_out,
        }
    }
}

/// Solves the one-class problem on `x` (row-major, `n_features` per row) with per-sample upper
/// bounds `upper` (scikit-learn's sample weights; all 1 without them).
///
/// The start is scikit-learn's: `ν Σ C_i` spread over the first rows in order, each taking as
/// much as its bound allows.
pub(crate) fn solve_one_class(
    x: &[f64],
    n_features: usize,
    kernel: KernelFn,
    upper: &[f64],
    nu: f64,
    settings: &SolverSettings,
) -> Solution {
    let l = upper.len();
    let mut alpha = vec![0.0; l];
    let mut remaining = 0.0;
    for c in upper {
        remaining += c * nu;
    }
    let mut i = 0;
    while remaining > 0.0 && i < l {
        alpha[i] = if upper[i] < remaining {
            upper[i]
        } else {
            remaining
        };
        remaining -= alpha[i];
        i += 1;
    }
    let squares = match kernel {
        KernelFn::Rbf { .. } => x.chunks_exact(n_features).map(|r| dot(r, r)).collect(),
        _ => Vec::new(),
    };
    let rows = Rows {
        x,
        n_features,
        kernel,
        squares,
    };
    let solver = Solver {
        q: OneClassQ::new(rows, l, settings.cache_bytes),
        l,
        active: l,
        alpha,
        status: vec![Bound::Lower; l],
        grad: vec![0.0; l],
        grad_bar: vec![0.0; l],
        upper: upper.to_vec(),
        tol: settings.tol,
        unshrink: false,
    };
    solver.solve(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SolverSettings {
        SolverSettings {
            tol: 1e-3,
            shrinking: true,
            max_iter: None,
            cache_bytes: 200.0 * 1048576.0,
        }
    }

    #[test]
    fn one_row_is_its_own_support_vector() {
        let s = solve_one_class(
            &[2.0, 3.0],
            2,
            KernelFn::Rbf { gamma: 0.5 },
            &[1.0],
            0.5,
            &settings(),
        );
        assert_eq!(s.alpha, vec![0.5]);
        assert_eq!(s.rho, 0.5);
        assert_eq!(s.iterations, 0);
    }

    #[test]
    fn alphas_sum_to_nu_l_and_stay_in_the_box() {
        let x: Vec<f64> = (0..40).map(|i| ((i * 37) % 11) as f64 * 0.3).collect();
        let s = solve_one_class(
            &x,
            2,
            KernelFn::Rbf { gamma: 0.7 },
            &[1.0; 20],
            0.3,
            &settings(),
        );
        let sum: f64 = s.alpha.iter().sum();
        assert!((sum - 6.0).abs() < 1e-9, "{sum}");
        assert!(s.alpha.iter().all(|&a| (0.0..=1.0).contains(&a)));
        assert!(s.iterations > 0);
    }

    #[test]
    fn a_tight_cache_gives_the_same_solution() {
        let x: Vec<f64> = (0..300).map(|i| ((i * 7919) % 101) as f64 / 17.0).collect();
        let kernel = KernelFn::Rbf { gamma: 0.2 };
        let full = solve_one_class(&x, 3, kernel, &[1.0; 100], 0.2, &settings());
        let tight = SolverSettings {
            cache_bytes: 1.0,
            ..settings()
        };
        let small = solve_one_class(&x, 3, kernel, &[1.0; 100], 0.2, &tight);
        assert_eq!(full.alpha, small.alpha);
        assert_eq!(full.rho, small.rho);
        assert_eq!(full.iterations, small.iterations);
    }

    #[test]
    fn powi_is_repeated_squaring() {
        assert_eq!(powi(2.0, 10), 1024.0);
        assert_eq!(powi(1.5, 0), 1.0);
    }
}
