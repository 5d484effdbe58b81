//! `C = A·B` on row-major slices through the gemm crate (the one Candle's matmul uses), without
//! Candle's tensor copies around it.

/// A row-major matrix view: `rows × cols`, `stride` elements from one row to the next.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Mat<'a> {
    fn view(self) -> View<'a> {
        assert!(self.cols <= self.stride.max(1), "a row longer than its stride");
        View { data: self.data, rows: self.rows, cols: self.cols, rs: self.stride, cs: 1 }
    }
}

/// `c[m × n] (row stride ldc) = a[m × k] · b[k × n]`, overwriting `c`.
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], ldc: usize) {
    gemm_view(a.view(), b.view(), c, ldc, false, true)
}

/// [`matmul`] on this thread alone, for callers that divide the work among threads themselves.
pub fn matmul_one_thread(a: Mat, b: Mat, c: &mut [f32], ldc: usize) {
    gemm_view(a.view(), b.view(), c, ldc, false, false)
}

/// A matrix view with any row and column strides (a transpose is a view with them swapped).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Elements from one row to the next.
    pub rs: usize,
    /// Elements from one column to the next.
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix, rows `stride` apart.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        View { data, rows, cols, rs: stride, cs: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `c[m × n] (row stride ldc) = a · b`, or `+= a · b` with `accumulate`; `parallel` lets gemm
/// split the product among Candle's threads (never inside a parallel section).
pub fn gemm_view(a: View, b: View, c: &mut [f32], ldc: usize, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions");
    assert!(a.fits() && b.fits(), "a view reaches past its slice");
    assert!(m == 0 || n == 0 || ((m - 1) * ldc + n <= c.len() && n <= ldc), "destination too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc.max(1)).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let par = match parallel {
        true => parallelism(m * n * k),
        false => gemm::Parallelism::None,
    };
    // SAFETY: `fits` and the destination check keep every index gemm touches inside the three
    // slices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Candle's thread setting (RAYON_NUM_THREADS), for products big enough to split; none in a
/// team's pass, whose helpers take work only from its sections (callers split there).
fn parallelism(work: usize) -> gemm::Parallelism {
    let threads = match super::team::team_threads() {
        Some(_) => 1,
        None => super::free_threads(),
    };
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if threads > 1 && work >= super::PARALLEL_WORK {
        return gemm::Parallelism::Rayon(threads);
    }
    let _ = (threads, work);
    gemm::Parallelism::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_transposed_and_accumulated() {
        // a: 2×3, b = aᵀ viewed from a's own data: a·aᵀ = [[14, 32], [32, 77]].
        let a = [1., 2., 3., 4., 5., 6.];
        let v = View::rows(&a, 2, 3, 3);
        let mut c = [1f32; 4];
        gemm_view(v, v.t(), &mut c, 2, true, false);
        assert_eq!(c, [15., 33., 33., 78.]);
        gemm_view(v, v.t(), &mut c, 2, false, false);
        assert_eq!(c, [14., 32., 32., 77.]);
    }

    #[test]
    fn strided_product() {
        // a: 2×3 inside a stride-4 buffer, b: 3×2 inside stride 3, c: stride 5.
        let a = [1., 2., 3., 9., 4., 5., 6., 9.];
        let b = [1., 0., 9., 0., 1., 9., 1., 1., 9.];
        let mut c = [7f32; 10];
        matmul(
            Mat { data: &a, rows: 2, cols: 3, stride: 4 },
            Mat { data: &b, rows: 3, cols: 2, stride: 3 },
            &mut c,
            5,
        );
        assert_eq!(&c[..2], &[4., 5.]);
        assert_eq!(&c[5..7], &[10., 11.]);
        assert_eq!(c[2], 7.0, "outside the view stays");
    }
}
