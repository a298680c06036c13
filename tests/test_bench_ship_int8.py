"""bench/ship_int8.py's check: the base model's INT8 file ships only when no held-out place loses more than the
tolerance of F1 or pixel IoU against fp32 in the same run."""


import pytest
from conftest import bench_module



@pytest.fixture(scope="module")
def ship_int8():
    return bench_module("ship_int8")


def result(scores: dict[str, tuple[float, float]]) -> dict:
    return {"places": [{"place": p, "f1": f1, "pixel_iou": iou} for p, (f1, iou) in scores.items()]}


def test_int8_ships_only_when_no_place_loses_more_than_the_tolerance(ship_int8):
    fp32 = result({"nairobi_ke": (0.367, 0.430), "kampala_ug": (0.510, 0.562), "xiamen_block": (0.057, 0.285)})
    close = result({"nairobi_ke": (0.359, 0.427), "kampala_ug": (0.542, 0.574), "xiamen_block": (0.010, 0.100)})
    check = ship_int8.held_out_check(fp32, close)
    assert check["within_tolerance"] and set(check["places"]) == {"nairobi_ke", "kampala_ug"}  # Xiamen judges nothing
    assert check["places"]["kampala_ug"] == {"fp32": {"f1": 0.510, "pixel_iou": 0.562},
                                             "int8": {"f1": 0.542, "pixel_iou": 0.574}}
    f1_lost = result({"nairobi_ke": (0.355, 0.430), "kampala_ug": (0.600, 0.600)})  # a gain elsewhere does not help
    assert not ship_int8.held_out_check(result({"nairobi_ke": (0.367, 0.430), "kampala_ug": (0.510, 0.562)}),
                                        f1_lost)["within_tolerance"]
    iou_lost = result({"nairobi_ke": (0.367, 0.419), "kampala_ug": (0.510, 0.562)})
    assert not ship_int8.held_out_check(result({"nairobi_ke": (0.367, 0.430), "kampala_ug": (0.510, 0.562)}),
                                        iou_lost)["within_tolerance"]
    with pytest.raises(ValueError, match="fp32 scored"):
        ship_int8.held_out_check(fp32, result({"nairobi_ke": (0.4, 0.4)}))
