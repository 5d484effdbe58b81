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

/// `c[m × n] (row stride ldc) = a[m × k] · b[k × n]`, overwriting `c`.
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions");
    assert!(a.cols <= a.stride.max(1) && b.cols <= b.stride.max(1) && n <= ldc.max(1), "strides");
    assert!(m == 0 || a.data.len() >= (m - 1) * a.stride + k, "lhs too short");
    assert!(k == 0 || b.data.len() >= (k - 1) * b.stride + n, "rhs too short");
    assert!(m == 0 || c.len() >= (m - 1) * ldc + n, "destination too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc.max(1)).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm touches inside the three slices, and `c`
    // is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            false,
            a.data.as_ptr(),
            1,
            a.stride as isize,
            b.data.as_ptr(),
            1,
            b.stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(m * n * k),
        )
    }
}

/// Candle's thread setting (RAYON_NUM_THREADS), for products big enough to split.
fn parallelism(work: usize) -> gemm::Parallelism {
    let threads = super::free_threads();
    #[cfg(not(target_arch = "wasm32"))]
    if threads > 1 && work >= 1 << 18 {
        return gemm::Parallelism::Rayon(threads);
    }
    let _ = (threads, work);
    gemm::Parallelism::None
}

#[cfg(test)]
mod tests {
    use super::*;

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
