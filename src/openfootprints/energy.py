"""What a run costs: energy (kWh) and emissions (kg CO2e) from CodeCarbon's offline tracker.

Offline means no network: the carbon intensity comes from CodeCarbon's own table for the configured
country (ISO 3166 alpha-3). Power is read from the hardware where CodeCarbon can (RAPL, NVML) and
otherwise estimated from the processor's TDP, so figures on a VM are estimates.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def energy_meter(country: str = "USA", enabled: bool = True) -> Iterator[dict]:
    """Measure the enclosed block; the yielded dict gets ``energy_kwh``, ``emissions_kg_co2e``,
    ``energy_country`` when the block ends (it stays empty when disabled)."""
    record: dict = {}
    if not enabled:
        yield record
        return
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(country_iso_code=country, log_level="error", output_methods=[],
                                      measure_power_secs=15, tracking_mode="process")
    tracker.start()
    try:
        yield record
    except BaseException:
        tracker.stop()  # a failed run reports its error, not its energy
        raise
    emissions = tracker.stop()
    data = tracker.final_emissions_data
    record.update(energy_kwh=float(data.energy_consumed), emissions_kg_co2e=float(emissions or 0.0),
                  energy_country=country)
    log.info("energy: %.6f kWh, %.6f kg CO2e (%s)", record["energy_kwh"], record["emissions_kg_co2e"], country)
