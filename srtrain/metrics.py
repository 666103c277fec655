"""The SR literature's scores: PSNR and SSIM on MATLAB's Y channel after shaving, PSNR and SSIM on RGB, MSE,
NRMSE, and FSIM/FSIMc as the authors' MATLAB code computes them.

Scores are only comparable with published tables if computed the same way, so every function scores
what the protocol scores: the output clamped to [0, 1] and rounded to uint8 levels. Inputs are batched
(N, C, H, W) float images in [0, 1] (C = 3 RGB or C = 1 gray); outputs are float64 (N,) per-image
values on the input's device. A uint8 image (0..255) may stand for either: it is scored on its levels as they are.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

GrayMode = Literal["direct", "replicate"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, for RGB in [0, 1]
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 256 uint8 levels, as float64 in 0..255; a uint8 image is on them already.

    Rounding is half away from zero, like MATLAB's ``im2uint8``, because the protocol scores the saved
    8-bit image, not the raw network output. (In place on one float64 copy, made contiguous whatever the input's
    layout, such as the model's channels_last output: one allocation, not four.)
    """
    if x.dtype == torch.uint8:
        return x.double()
    levels = x.to(torch.float64, copy=True, memory_format=torch.contiguous_format)
    return levels.clamp_(0, 1).mul_(255).add_(0.5).floor_()


def rgb_to_y(x255: Tensor, gray: GrayMode = "replicate") -> Tensor:
    """MATLAB ``rgb2ycbcr`` luma (16..235, not rounded) of (N, C, H, W) images in 0..255, as (N, 1, H, W).

    For gray images (C = 1), ``"replicate"`` copies the channel to RGB first, as papers scoring their own
    models do; ``"direct"`` uses the gray levels as Y, as the code behind the published bicubic tables did.
    """
    x255 = x255.double()
    channels = x255.shape[1]
    if channels == 1:
        if gray == "direct":
            return x255
        if gray != "replicate":
            raise ValueError(f"gray must be 'direct' or 'replicate', got {gray!r}")
        x255 = x255.expand(-1, 3, -1, -1)
    elif channels != 3:
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    y = x255[:, :1] * _Y_WEIGHTS[0]
    y.add_(x255[:, 1:2], alpha=_Y_WEIGHTS[1]).add_(x255[:, 2:], alpha=_Y_WEIGHTS[2])
    return y.div_(255).add_(16)


def shave(x: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels on every side of H and W, where resizing is least reliable."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = x.shape[-2:]
    return x[..., border : h - border, border : w - border]


def _check_pair(sr: Tensor, hr: Tensor) -> None:
    """Fail loudly on mismatched shapes rather than let broadcasting score the wrong pixels."""
    if sr.shape != hr.shape or sr.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {sr.shape} and {hr.shape}")


def _mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error over every channel and pixel."""
    return (a - b).square_().flatten(1).mean(dim=1)


def _psnr(a: Tensor, b: Tensor, peak: float) -> Tensor:
    """Per-image PSNR; identical images give MSE 0 and so +inf."""
    return 10 * torch.log10(peak**2 / _mse(a, b))


SSIM_STRIP_PIXELS = 1 << 17  # pixels per map in one strip of `_ssim`: four maps of it stay in a CPU's cache


@functools.cache
def _gaussian_1d() -> tuple[float, ...]:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)`` (the 2-D window is its outer product)."""
    x = torch.arange(_SSIM_SIZE, dtype=torch.float64) - (_SSIM_SIZE - 1) / 2
    g = torch.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return tuple((g / g.sum()).tolist())


def _gaussian_filter(x: Tensor, scratch: Tensor) -> Tensor:
    """'valid' filtering of the last two dims by the separable SSIM window, as weighted sums of shifted views.

    Eleven multiply-adds per axis stream through memory: on CPUs many times faster than a depthwise conv2d
    (float64 most of all), and on GPUs as fast. Nothing is allocated: the pass along H writes into `scratch` (at
    least x's size less the window's context along H) and the pass along W back into `x`'s own storage, which is
    spent by then; the result is a view of `x`.
    """
    taps = _gaussian_1d()
    context = len(taps) - 1
    height, width = x.shape[-2] - context, x.shape[-1] - context
    along_h = scratch[..., :height, : x.shape[-1]]
    torch.mul(x[..., :height, :], taps[0], out=along_h)
    for k in range(1, len(taps)):
        along_h.add_(x[..., k : k + height, :], alpha=taps[k])
    out = x[..., :height, :width]
    torch.mul(along_h[..., :width], taps[0], out=out)
    for k in range(1, len(taps)):
        out.add_(along_h[..., k : k + width], alpha=taps[k])
    return out


def _ssim(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM map of (N, 1, H, W) images in 0..255, Gaussian window, 'valid' filtering, in float64 throughout.

    The map is computed in strips of rows (each with the 10 rows of context the window needs) and summed strip by
    strip: a strip's moments, filtered moments and formula stay in cache, where whole-image maps would stream
    through memory dozens of times. So exact float64 costs less than the float32 filtering of whole maps that it
    replaced (docs/performance.md, "Evaluation speed").
    """
    if min(x.shape[-2:]) < _SSIM_SIZE:
        size = tuple(x.shape[-2:])
        raise ValueError(f"SSIM needs images of at least {_SSIM_SIZE}x{_SSIM_SIZE} after shaving, got {size}")
    x, y = x.double(), y.double()
    n, _, height, width = x.shape
    out_h, context = height - _SSIM_SIZE + 1, _SSIM_SIZE - 1
    rows = max(1, min(out_h, SSIM_STRIP_PIXELS // (n * width)))
    moments, scratch = x.new_empty(n, 4, rows + context, width), x.new_empty(n, 4, rows, width)
    total = x.new_zeros(n)
    for top in range(0, out_h, rows):
        bottom = min(top + rows, out_h) + context
        xs, ys, m = x[..., top:bottom, :], y[..., top:bottom, :], moments[..., : bottom - top, :]
        m[:, :1], m[:, 1:2] = xs, ys
        torch.mul(xs, xs, out=m[:, 2:3]).addcmul_(ys, ys)  # the formula needs var_x + var_y only: one map, not two
        torch.mul(xs, ys, out=m[:, 3:])
        mu_x, mu_y, squares, xy = _gaussian_filter(m, scratch).unbind(dim=1)
        mu_xy = torch.mul(mu_x, mu_y, out=scratch[:, 0, : mu_x.shape[1], : mu_x.shape[2]])
        variances = squares.sub_(mu_x.square_()).sub_(mu_y.square_()).add_(_SSIM_C2)  # var_x + var_y + C2
        covariance = xy.sub_(mu_xy).mul_(2).add_(_SSIM_C2)  # 2 cov + C2
        ssim_map = mu_xy.mul_(2).add_(_SSIM_C1).mul_(covariance)
        ssim_map.div_(mu_x.add_(mu_y).add_(_SSIM_C1).mul_(variances))  # mu_x, mu_y hold their squares here
        total += ssim_map.sum(dim=(1, 2))
    return total / (out_h * (width - context))


class Scored:
    """An SR/HR pair as the protocol scores it, quantized once and its Y channels converted once, so that
    scoring several metrics (validation: PSNR-Y, SSIM-Y, PSNR-RGB) pays for that work once per image.

    ``shave`` is the border dropped by the Y scores and SSIM-RGB (the scale, by convention); PSNR-RGB, MSE,
    NRMSE and FSIM score the whole image, as their references do.
    """

    def __init__(self, sr: Tensor, hr: Tensor, shave: int, gray: GrayMode = "replicate") -> None:
        _check_pair(sr, hr)
        self.sr, self.hr, self.shave, self.gray = quantize(sr), quantize(hr), shave, gray

    @functools.cached_property
    def y(self) -> tuple[Tensor, Tensor]:
        """The shaved Y channels of both images (only the shaved region is converted)."""
        return rgb_to_y(shave(self.sr, self.shave), self.gray), rgb_to_y(shave(self.hr, self.shave), self.gray)

    def psnr_y(self) -> Tensor:
        """PSNR in dB on the quantized Y channel after shaving; +inf for identical images."""
        return _psnr(*self.y, 255.0)

    def ssim_y(self) -> Tensor:
        """SSIM on the quantized Y channel after shaving, as Wang et al.'s ``ssim_index.m``."""
        return _ssim(*self.y)

    def psnr_rgb(self) -> Tensor:
        """PSNR in dB over all channels, no shave; +inf for identical images."""
        return _psnr(self.sr, self.hr, 255.0)

    def ssim_rgb(self) -> Tensor:
        """SSIM of each channel after shaving, averaged over the channels (BasicSR's RGB SSIM).

        Papers that score RGB rather than Y (BasicSR's ``test_y_channel=False``) average the per-channel SSIMs;
        a gray image (C = 1) gives the SSIM of its one channel.
        """
        a, b = (shave(x, self.shave).flatten(0, 1).unsqueeze(1) for x in (self.sr, self.hr))
        return _ssim(a, b).view(self.sr.shape[:2]).mean(dim=1)

    def mse(self) -> Tensor:
        """Mean squared error over all channels in [0, 1] levels, no shave; 0 for identical images."""
        return _mse(self.sr, self.hr) / 255**2

    def nrmse(self) -> Tensor:
        """``||hr - sr|| / ||hr||`` over all channels, no shave; 0 for identical images.

        skimage's default ('euclidean') normalisation, so ``normalized_root_mse(hr, sr)`` gives the same number.
        The ratio is scale-free: 0..255 levels give what [0, 1] would.
        """
        return torch.sqrt(_mse(self.hr, self.sr)) / torch.sqrt(self.hr.square().flatten(1).mean(dim=1))

    def fsim(self, chromatic: bool = True) -> Tensor:
        """FSIM, or FSIMc when ``chromatic`` (see `fsim`)."""
        return _fsim_levels(self.sr, self.hr, chromatic)


def psnr_y(sr: Tensor, hr: Tensor, shave: int, gray: GrayMode = "replicate") -> Tensor:
    """PSNR in dB on the quantized Y channel after shaving ``shave`` pixels; +inf for identical images."""
    return Scored(sr, hr, shave, gray).psnr_y()


def ssim_y(sr: Tensor, hr: Tensor, shave: int, gray: GrayMode = "replicate") -> Tensor:
    """SSIM on the quantized Y channel after shaving ``shave`` pixels, as Wang et al.'s ``ssim_index.m``."""
    return Scored(sr, hr, shave, gray).ssim_y()


def psnr_rgb(sr: Tensor, hr: Tensor) -> Tensor:
    """PSNR in dB over all channels of the quantized images in [0, 1], no shave; +inf for identical images."""
    return Scored(sr, hr, 0).psnr_rgb()


def ssim_rgb(sr: Tensor, hr: Tensor, shave: int = 0) -> Tensor:
    """SSIM of each quantized channel after shaving, averaged over the channels (see `Scored.ssim_rgb`)."""
    return Scored(sr, hr, shave).ssim_rgb()


def mse(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean squared error over all channels of the quantized images in [0, 1], no shave; 0 for identical images."""
    return Scored(sr, hr, 0).mse()


def nrmse(sr: Tensor, hr: Tensor) -> Tensor:
    """``||hr - sr|| / ||hr||`` over all channels of the quantized images, no shave (see `Scored.nrmse`)."""
    return Scored(sr, hr, 0).nrmse()


# FSIM and FSIMc (Zhang, Zhang, Mou and Zhang, IEEE TIP 2011) as the authors' FeatureSIM.m computes them, with
# Kovesi's phasecong2 configured as that file configures it. Published FSIM figures come from that code, so
# each step below follows it, including where other ports (e.g. piq) take shortcuts.
_YIQ = (  # FeatureSIM.m's RGB -> YIQ rows (3 digits, not the 4-digit NTSC matrix)
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)
_FSIM_T1, _FSIM_T2, _FSIM_T3, _FSIM_T4, _FSIM_LAMBDA = 0.85, 160.0, 200.0, 200.0, 0.03
_PC_SCALES, _PC_ORIENTS = 4, 4
_PC_MIN_WAVELENGTH, _PC_MULT = 6, 2
_PC_SIGMA_ON_F, _PC_DTHETA_ON_SIGMA = 0.55, 1.2
_PC_K, _PC_EPSILON = 2.0, 1e-4
_PC_LOWPASS_CUTOFF, _PC_LOWPASS_ORDER = 0.45, 15
_SCHARR_X = ((3.0, 0.0, -3.0), (10.0, 0.0, -10.0), (3.0, 0.0, -3.0))  # FeatureSIM.m's dx * 16; dy = dx'


def _fsim_factor(rows: int, cols: int) -> int:
    """FeatureSIM.m's downsampling factor ``max(1, round(min(rows, cols) / 256))``, halves rounded up as MATLAB's.

    FSIM's constants were tuned for images about 256 pixels on a side, so larger ones are scored shrunk.
    """
    return max(1, math.floor(min(rows, cols) / 256 + 0.5))


def _fsim_downsample(x: Tensor, factor: int) -> Tensor:
    """FeatureSIM.m's ``conv2(x, fspecial('average', F), 'same')`` sampled at ``1:F:end``, on (N, C, H, W).

    MATLAB's 'same' puts the F x F box's origin floor(F / 2) from its corner and pads with zeros, so sample k
    averages rows k F - (F - 1 - floor(F / 2)) .. k F + floor(F / 2), zeros outside, and ceil(H / F) samples
    remain: not F x F block averaging, whose windows start at row 0 and drop a partial last block.
    """
    if factor == 1:
        return x
    before, after = factor - 1 - factor // 2, factor // 2
    # The zero padding is explicit, so average pooling divides by F^2 everywhere as fspecial's box does.
    return F.avg_pool2d(F.pad(x, (before, after, before, after)), factor, stride=factor)


def _frequency_range(n: int) -> Tensor:
    """phasecong2's frequency coordinates along an axis of length n, from -0.5 (odd n: to +0.5 exactly)."""
    if n % 2:
        return (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n - 1)
    return (torch.arange(n, dtype=torch.float64) - n / 2) / n


def _frequency_grid(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """phasecong2's ``meshgrid(xrange, yrange)`` as broadcastable (1, W) x and (H, 1) y: x along the columns."""
    return _frequency_range(cols).view(1, cols), _frequency_range(rows).view(rows, 1)


class _LogGaborBank(NamedTuple):
    """phasecong2's filters for one image size and the noise statistics that depend only on them."""

    filters: Tensor  # (orientations, scales, H, W) transfer functions, zero frequency at [0, 0]
    em_n: Tensor  # (orientations,) sum of the squared smallest-scale filter
    sum_an2: Tensor  # (orientations,) sum over scales and pixels of the squared spatial filters
    sum_ai_aj: Tensor  # (orientations,) the same for the products of distinct scales


@functools.lru_cache(maxsize=16)
def _log_gabor_bank(rows: int, cols: int, device: torch.device) -> _LogGaborBank:
    """phasecong2's lowpassed log-Gabor x angular-Gaussian filters, built in float64 once per size."""
    x, y = _frequency_grid(rows, cols)
    radius = torch.sqrt(x**2 + y**2)
    theta = torch.atan2(-y, x)  # -y: angles anticlockwise
    lowpass = torch.fft.ifftshift(1 / (1.0 + (radius / _PC_LOWPASS_CUTOFF) ** (2 * _PC_LOWPASS_ORDER)))
    radius = torch.fft.ifftshift(radius)
    theta = torch.fft.ifftshift(theta)
    radius[0, 0] = 1  # log(0) is avoided here and the zero-frequency gain set to 0 below
    sin_theta, cos_theta = torch.sin(theta), torch.cos(theta)

    log_gabor = []
    for s in range(_PC_SCALES):
        centre = 1.0 / (_PC_MIN_WAVELENGTH * _PC_MULT**s)
        radial = torch.exp((-(torch.log(radius / centre) ** 2)) / (2 * math.log(_PC_SIGMA_ON_F) ** 2)) * lowpass
        radial[0, 0] = 0
        log_gabor.append(radial)
    theta_sigma = math.pi / _PC_ORIENTS / _PC_DTHETA_ON_SIGMA
    spread = []
    for o in range(_PC_ORIENTS):
        angle = o * math.pi / _PC_ORIENTS
        ds = sin_theta * math.cos(angle) - cos_theta * math.sin(angle)
        dc = cos_theta * math.cos(angle) + sin_theta * math.sin(angle)
        spread.append(torch.exp((-(torch.abs(torch.atan2(ds, dc)) ** 2)) / (2 * theta_sigma**2)))
    filters = torch.stack(spread)[:, None] * torch.stack(log_gabor)[None]

    spatial = torch.fft.ifft2(filters).real * math.sqrt(rows * cols)  # rescaled to match power, as phasecong2
    pairs = [(i, j) for i in range(_PC_SCALES) for j in range(i + 1, _PC_SCALES)]
    sum_ai_aj = sum(spatial[:, i] * spatial[:, j] for i, j in pairs).sum(dim=(-2, -1))
    bank = _LogGaborBank(
        filters, filters[:, 0].square().sum(dim=(-2, -1)), spatial.square().sum(dim=(1, 2, 3)), sum_ai_aj
    )
    return _LogGaborBank(*(t.to(device) for t in bank))


def _median(x: Tensor) -> Tensor:
    """MATLAB's median along the last dim: an even count averages the two middle values (torch's takes the lower)."""
    n = x.shape[-1]
    upper = x.kthvalue(n // 2 + 1, dim=-1).values  # selection, not a full sort
    return upper if n % 2 else (x.kthvalue(n // 2, dim=-1).values + upper) / 2


def _phase_congruency(y: Tensor) -> Tensor:
    """phasecong2's phase congruency map of (N, 1, H, W) luminance, as (N, 1, H, W).

    Per orientation: weighted phase deviation energy over the scales, less a noise threshold estimated from
    the median smallest-scale response (Rayleigh noise, k = 2 sigmas, divided by 1.7), summed over
    orientations and divided by the summed amplitudes.
    """
    rows, cols = y.shape[-2:]
    bank = _log_gabor_bank(rows, cols, y.device)
    image_fft = torch.fft.fft2(y[:, 0])[:, None]
    energy_all = an_all = torch.zeros_like(y[:, 0])
    for o in range(_PC_ORIENTS):
        eo = torch.fft.ifft2(image_fft * bank.filters[o])  # (N, scales, H, W): even = real, odd = imaginary
        even, odd, an = eo.real, eo.imag, eo.abs()
        sum_e, sum_o = even.sum(dim=1, keepdim=True), odd.sum(dim=1, keepdim=True)
        x_energy = torch.sqrt(sum_e**2 + sum_o**2) + _PC_EPSILON
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = (even * mean_e + odd * mean_o - torch.abs(even * mean_o - odd * mean_e)).sum(dim=1)

        mean_e2n = -_median(an[:, 0].square().flatten(1)) / math.log(0.5)
        noise_power = mean_e2n / bank.em_n[o]
        noise_energy2 = 2 * noise_power * bank.sum_an2[o] + 4 * noise_power * bank.sum_ai_aj[o]
        tau = torch.sqrt(noise_energy2 / 2)  # Rayleigh parameter
        threshold = (tau * math.sqrt(math.pi / 2) + _PC_K * torch.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        energy_all = energy_all + torch.clamp_min(energy - threshold.view(-1, 1, 1), 0)
        an_all = an_all + an.sum(dim=1)
    return (energy_all / an_all).unsqueeze(1)


def _gradient_magnitude(y: Tensor) -> Tensor:
    """FeatureSIM.m's Scharr gradient magnitude of (N, 1, H, W) luminance: ``conv2(Y, dx, 'same')``, zero padded."""
    dx = torch.tensor(_SCHARR_X, dtype=torch.float64, device=y.device) / 16
    kernels = torch.stack([dx, dx.T]).unsqueeze(1).flip(-2, -1)  # conv2 convolves; conv2d correlates
    grad = F.conv2d(y, kernels, padding=1)
    return torch.sqrt(grad[:, :1] ** 2 + grad[:, 1:] ** 2)


def _similarity(a: Tensor, b: Tensor, constant: float) -> Tensor:
    """FSIM's similarity of two feature maps, 1 where they agree."""
    return (2 * a * b + constant) / (a**2 + b**2 + constant)


def _real_power(x: Tensor, exponent: float) -> Tensor:
    """MATLAB's ``real(x .^ p)``: a negative base takes the principal complex power, real part |x|^p cos(p pi)."""
    magnitude = torch.abs(x) ** exponent
    return torch.where(x < 0, magnitude * math.cos(exponent * math.pi), magnitude)


def _fsim_features(x255: Tensor, factor: int, chromatic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Downsampled YIQ (Y only unless ``chromatic``), phase congruency and gradient magnitude of 0..255 images."""
    if x255.shape[1] == 3:
        weights = torch.tensor(_YIQ[: 3 if chromatic else 1], dtype=torch.float64, device=x255.device)
        x255 = torch.einsum("kc,nchw->nkhw", weights, x255)
    yiq = _fsim_downsample(x255, factor)
    lum = yiq[:, :1]
    return yiq, _phase_congruency(lum), _gradient_magnitude(lum)


def fsim(sr: Tensor, hr: Tensor, chromatic: bool = True) -> Tensor:
    """FSIM, or FSIMc when ``chromatic``, of the quantized images, as the authors' FeatureSIM.m; 1 when identical.

    Phase congruency weights where structure is and, with gradient magnitude, measures how alike it is;
    FSIMc adds the I and Q chroma. Images with min(H, W) >= 384 are box-filtered and subsampled first.
    Gray images (C = 1) are scored on their levels and ``chromatic`` is ignored (FeatureSIM.m's FSIMc equals
    FSIM for them). Flat images have no phase congruency and give NaN, as in the reference.
    """
    return Scored(sr, hr, 0).fsim(chromatic)


def _fsim_levels(sr: Tensor, hr: Tensor, chromatic: bool) -> Tensor:
    """`fsim` of images already quantized to 0..255 levels."""
    channels = sr.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    chromatic = chromatic and channels == 3
    factor = _fsim_factor(*sr.shape[-2:])
    # Separate passes, so that identical images take identical arithmetic and score exactly 1.
    (yiq_sr, pc_sr, grad_sr), (yiq_hr, pc_hr, grad_hr) = (_fsim_features(x, factor, chromatic) for x in (sr, hr))
    pc_max = torch.maximum(pc_sr, pc_hr)
    sim = _similarity(grad_sr, grad_hr, _FSIM_T2) * _similarity(pc_sr, pc_hr, _FSIM_T1)
    if chromatic:
        i_sim = _similarity(yiq_sr[:, 1:2], yiq_hr[:, 1:2], _FSIM_T3)
        q_sim = _similarity(yiq_sr[:, 2:], yiq_hr[:, 2:], _FSIM_T4)
        # Chroma of opposite signs can make a factor negative; the reference keeps the real part of its power.
        sim = sim * _real_power(i_sim * q_sim, _FSIM_LAMBDA)
    return (sim * pc_max).flatten(1).sum(dim=1) / pc_max.flatten(1).sum(dim=1)
