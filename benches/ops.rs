//! Where the time goes in one BLIP-base vision layer (577 tokens x 768), op by op, F32 and INT8.
//! `cargo bench --bench ops` (set RAYON_NUM_THREADS to pin the thread count).

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Module, Tensor};

fn time<T>(label: &str, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!("{label:<40} {:>8.2} ms", s * 1e3);
    s
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (n, h, i, heads) = (577usize, 768usize, 3072usize, 12usize);
    let x = Tensor::randn(0f32, 1.0, (1, n, h), &dev)?;
    let xi = Tensor::randn(0f32, 1.0, (1, n, i), &dev)?;
    let mut total_f32 = 0.0;
    let mut total_q8 = 0.0;
    for (name, out, inp, xs) in [
        ("qkv", 3 * h, h, &x),
        ("projection", h, h, &x),
        ("fc1", i, h, &x),
        ("fc2", h, i, &xi),
    ] {
        let w = Tensor::randn(0f32, 0.02, (out, inp), &dev)?;
        let lin = candle_nn::Linear::new(w.clone(), None);
        time(
            &format!("f32 linear {name} {out}x{inp} (candle)"),
            5,
            || lin.forward(xs).unwrap(),
        );
        time(
            &format!("f32 linear {name} {out}x{inp} (gemm crate)"),
            5,
            || blipq::kernels::matmul::linear_f32(xs, &w, None).unwrap(),
        );
        let packed = blipq::kernels::sgemm::F32Matrix::new(w.clone()).unwrap();
        total_f32 += time(
            &format!(
                "f32 linear {name} {out}x{inp} (blipq, {:?})",
                packed.kernel()
            ),
            5,
            || packed.forward_with_bias(xs, None).unwrap(),
        );
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        let ours = blipq::kernels::q8::Q8Matrix::from_qtensor(&q).unwrap();
        total_q8 += time(
            &format!("int8 linear {name} {out}x{inp} (blipq)"),
            5,
            || ours.forward(xs).unwrap(),
        );
    }
    let q = Tensor::randn(0f32, 1.0, (1, heads, n, h / heads), &dev)?;
    let k = Tensor::randn(0f32, 1.0, (1, heads, n, h / heads), &dev)?;
    let kt = k.t()?;
    let scores = q.matmul(&kt)?;
    let t_sm = time("softmax 12x577x577", 5, || {
        candle_nn::ops::softmax_last_dim(&scores).unwrap()
    });
    let t_sm_ours = time("softmax 12x577x577 (blipq)", 5, || {
        blipq::kernels::ops::softmax_last_dim(&scores).unwrap()
    });
    let t_gelu_candle = time("gelu_erf 577x3072 (candle)", 5, || xi.gelu_erf().unwrap());
    let t_gelu = time("gelu_erf 577x3072 (blipq)", 5, || {
        blipq::kernels::ops::activation(&xi, candle_nn::Activation::Gelu).unwrap()
    });
    println!(
        "blipq vs candle: softmax {:.1}x, gelu {:.1}x faster",
        t_sm / t_sm_ours,
        t_gelu_candle / t_gelu
    );
    let ln = candle_nn::LayerNorm::new(
        Tensor::ones(h, candle_core::DType::F32, &dev)?,
        Tensor::zeros(h, candle_core::DType::F32, &dev)?,
        1e-5,
    );
    let t_ln = time("layer_norm 577x768", 5, || ln.forward(&x).unwrap());
    let qkv = Tensor::randn(0f32, 1.0, (1, n, 3 * h), &dev)?;
    // The whole attention core, from the fused projection to the heads side by side: candle's
    // ops (permute copies, batched matmuls, blipq's softmax) vs blipq's strided per-head gemm.
    let scale = 1.0 / ((h / heads) as f64).sqrt();
    let t_attn_candle = time("attention core (candle ops)", 5, || {
        let t = qkv
            .reshape((1, n, 3, heads, h / heads))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let q = (t.get(0).unwrap().contiguous().unwrap() * scale).unwrap();
        let k = t.get(1).unwrap().contiguous().unwrap();
        let v = t.get(2).unwrap().contiguous().unwrap();
        let p = blipq::kernels::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
        p.matmul(&v)
            .unwrap()
            .permute((0, 2, 1, 3))
            .unwrap()
            .reshape((1, n, h))
            .unwrap()
    });
    let t_attn = time("attention core (blipq)", 5, || {
        blipq::kernels::attention::self_attention(&qkv, heads, scale).unwrap()
    });
    println!(
        "blipq vs candle: attention core {:.1}x faster",
        t_attn_candle / t_attn
    );
    let other = t_attn + t_gelu + 2.0 * t_ln;
    println!(
        "per layer: f32 linears {:.1} ms, int8 linears {:.1} ms, rest {:.1} ms",
        total_f32 * 1e3,
        total_q8 * 1e3,
        other * 1e3
    );
    println!(
        "x12 layers: f32 {:.3} s, int8 {:.3} s",
        12.0 * (total_f32 + other),
        12.0 * (total_q8 + other)
    );
    Ok(())
}
