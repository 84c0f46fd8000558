"""The privacy a run spends, counted by Google's dp-accounting (never by this package): DP-SGD's
step is a Poisson-sampled Gaussian mechanism, composed once per step."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ..checkpoint import PrivacyRecord, Sidecar
from ..config import MAX_NOISE, MIN_NOISE, PrivacyConfig, TrainConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class Mechanism:
    """A private run's DP-SGD, fixed before its first step."""

    noise_multiplier: float
    sample_rate: float
    clip: float
    delta: float
    accountant: str

    def spent(self, steps: int) -> PrivacyRecord:
        """The record of a checkpoint written after `steps` steps."""
        return PrivacyRecord(epsilon_of(self.noise_multiplier, self.sample_rate, steps,
                                        self.delta, self.accountant),
                             self.delta, self.noise_multiplier, self.sample_rate, steps,
                             self.clip, self.accountant)

    def describe(self, steps: int) -> str:
        """The run's line about its privacy, when it trains `steps` steps in all."""
        whole = self.spent(steps)
        return (f"private (DP-SGD): each example's gradient clipped to {self.clip:g}, noise "
                f"multiplier {self.noise_multiplier:g}, each example in a batch with "
                f"probability {self.sample_rate:.4g}; all {steps} steps spend epsilon "
                f"{whole.epsilon:.3f} at delta {self.delta:g} ({self.accountant.upper()})")

    @classmethod
    def recorded(cls, record: PrivacyRecord | None) -> Mechanism | None:
        """The DP-SGD a checkpoint's record was spent by (None: not a private run's)."""
        if record is None:
            return None
        return cls(record.noise_multiplier, record.sample_rate, record.clip, record.delta,
                   record.accountant)


def dp_event(noise_multiplier: float, sample_rate: float, steps: int):
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate,
                                            dp_accounting.GaussianDpEvent(noise_multiplier)),
        steps)


def accountant_of(kind: str):
    from absl import logging
    from dp_accounting import pld, rdp

    # RDP warns on stderr of each order it cannot compute, and leaves it out, as it should.
    logging.set_verbosity(logging.ERROR)

    return pld.PLDAccountant() if kind == "pld" else rdp.RdpAccountant()


@functools.lru_cache(maxsize=256)
def epsilon_of(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
               accountant: str) -> float:
    """The epsilon at `delta` of `steps` DP-SGD steps (0 before the first)."""
    if steps == 0:
        return 0.0
    counter = accountant_of(accountant)
    counter.compose(dp_event(noise_multiplier, sample_rate, steps))
    return float(counter.get_epsilon(delta))


def mechanism_for(privacy: PrivacyConfig, examples: int, batch_size: int, steps: int
                  ) -> Mechanism:
    """The run's DP-SGD over `steps` steps on `examples` training images: its noise as given,
    or the least that spends no more than train.privacy.target_epsilon. A ConfigError when
    delta is too large for the examples, or the target cannot be met."""
    delta, kind = privacy.delta, privacy.accountant
    if delta >= 1 / examples:
        raise ConfigError(f"train.privacy.delta is {delta:g}, not below 1 / the {examples} "
                          f"training examples ({1 / examples:.2g}): a guarantee that weak allows "
                          "one example in the release; use 1e-5 or less")
    rate = batch_size / examples
    if privacy.noise_multiplier is not None:
        return Mechanism(privacy.noise_multiplier, rate, privacy.clip, delta, kind)
    target = privacy.target_epsilon
    most = epsilon_of(MAX_NOISE, rate, steps, delta, kind)
    if most > target:
        raise ConfigError(
            f"train.privacy.target_epsilon={target:g} cannot be met in {steps} steps at "
            f"train.batch_size={batch_size} ({examples} examples): even noise_multiplier "
            f"{MAX_NOISE:g} spends {most:.3g}; raise target_epsilon, or lower train.epochs "
            "or train.batch_size")
    if epsilon_of(MIN_NOISE, rate, steps, delta, kind) <= target:
        return Mechanism(MIN_NOISE, rate, privacy.clip, delta, kind)
    import dp_accounting

    noise = dp_accounting.calibrate_dp_mechanism(
        lambda: accountant_of(kind), lambda sigma: dp_event(sigma, rate, steps), target, delta,
        dp_accounting.ExplicitBracketInterval(MIN_NOISE, MAX_NOISE), tol=1e-4)
    # Brent's method stops within tol of the boundary, on either side of it.
    while epsilon_of(noise, rate, steps, delta, kind) > target:
        noise += 1e-4
    return Mechanism(math.ceil(noise * 1e6) / 1e6, rate, privacy.clip, delta, kind)


def run_mechanism(train: TrainConfig, examples: int, steps: int, resumed: Sidecar | None,
                  run_dir) -> Mechanism | None:
    """train.privacy's DP-SGD for a run of `steps` steps an epoch (None: not private), which a
    run resumed from a checkpoint (`resumed`, its sidecar) must have trained with: its spent
    privacy was counted at that noise and that rate."""
    mechanism = (mechanism_for(train.privacy, examples, train.batch_size, steps * train.epochs)
                 if train.privacy.on else None)
    if resumed is None or mechanism == Mechanism.recorded(resumed.privacy):
        return mechanism
    recorded = resumed.privacy
    was = ("without train.privacy" if recorded is None else
           f"with noise_multiplier {recorded.noise_multiplier:g}, sample rate "
           f"{recorded.sample_rate:.6g}, clip {recorded.clip:g}, delta {recorded.delta:g}")
    raise ConfigError(f"{run_dir} was trained {was}; its privacy was counted for that, so "
                      "resume it with the train.privacy and train.batch_size (and, with a "
                      "target_epsilon, the train.epochs) it began with")
