"""Bad input raises one clear echoscreen error, never a raw pydicom/numpy exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from echoscreen.dicom import read_cine
from echoscreen.errors import DicomDecodeError, NotDicomError

MakeUS = Callable[..., pydicom.Dataset]
ToBytes = Callable[[pydicom.Dataset], bytes]


def test_not_dicom_bytes() -> None:
    with pytest.raises(NotDicomError, match="not DICOM"):
        read_cine(b"this is a text file, not an image\n" * 20)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotDicomError, match="no such file"):
        read_cine(tmp_path / "absent.dcm")


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "US1_UNCR.dcm", "OBXXXX1A_rle.dcm"])
def test_truncated_file(pydicom_file: Callable[[str], Path], name: str) -> None:
    data = pydicom_file(name).read_bytes()
    with pytest.raises(DicomDecodeError, match="truncated"):
        read_cine(data[: len(data) * 2 // 3])


def test_no_pixel_data(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.zeros((2, 8, 8, 3), np.uint8))
    del ds.PixelData
    with pytest.raises(DicomDecodeError, match="no pixel data"):
        read_cine(dicom_bytes(ds))


@pytest.mark.parametrize(
    "change", [{"NumberOfFrames": 0}, {"SamplesPerPixel": 4}, {"Rows": None}, {"PixelData": None}]
)
def test_header_errors_name_no_instance_uid(
    make_us: MakeUS, dicom_bytes: ToBytes, change: dict[str, object]
) -> None:
    """The messages end up in the catalog's quarantine reasons and the screening JSON,
    both of which must hold no original UID: they name the SOP class only."""
    ds = make_us(np.zeros((2, 8, 8, 3), np.uint8))
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    with pytest.raises(DicomDecodeError) as err:
        read_cine(dicom_bytes(ds))
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
        assert uid not in str(err.value)
    assert ds.SOPClassUID in str(err.value)


def test_zero_frames(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.zeros((2, 8, 8, 3), np.uint8), NumberOfFrames=0)
    with pytest.raises(DicomDecodeError, match="0 frames"):
        read_cine(dicom_bytes(ds))


def test_absurd_size_is_refused_before_decoding(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.zeros((1, 8, 8, 3), np.uint8), Rows=60000, Columns=60000, NumberOfFrames=900)
    with pytest.raises(DicomDecodeError, match="over the limit"):
        read_cine(dicom_bytes(ds))
    ds = make_us(np.zeros((1, 8, 8, 3), np.uint8), NumberOfFrames=50_000)
    with pytest.raises(DicomDecodeError, match="max_frames"):
        read_cine(dicom_bytes(ds))


def test_undecodable_jpeg_frame(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.full((2, 16, 16, 3), 90, np.uint8), jpeg=True)
    good = next(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate([good, b"not a jpeg at all"])  # fast route, frame 1 bad
    with pytest.raises(DicomDecodeError, match="frame 1 is not a decodable 16 x 16 JPEG"):
        read_cine(dicom_bytes(ds))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0garbage" * 4] * 2)  # pydicom's route
    with pytest.raises(DicomDecodeError, match=r"cannot be decoded: .*libjpeg"):
        read_cine(dicom_bytes(ds))


def test_fewer_encoded_frames_than_declared(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.full((2, 16, 16, 3), 90, np.uint8), jpeg=True, NumberOfFrames=5)
    with pytest.raises(DicomDecodeError, match="declares 5 frames"):
        read_cine(dicom_bytes(ds))


def test_short_native_pixel_data(make_us: MakeUS, dicom_bytes: ToBytes) -> None:
    ds = make_us(np.zeros((4, 16, 16, 3), np.uint8))
    ds.PixelData = ds.PixelData[:1000]
    with pytest.raises(DicomDecodeError, match="cannot be decoded"):
        read_cine(dicom_bytes(ds))


def test_frame_index_out_of_range(pydicom_file: Callable[[str], Path]) -> None:
    with pytest.raises(DicomDecodeError, match="outside"):
        read_cine(pydicom_file("examples_ybr_color.dcm"), frame_indices=[0, 30])


@pytest.mark.parametrize("size", [140, 152, 200, 300, 600, 1000, 5000, 20000])
def test_a_file_cut_inside_its_header_is_called_truncated(
    pydicom_file: Callable[[str], Path], size: int
) -> None:
    """pydicom reads a header cut short as if it ended there, without a word: the file
    was reported as having no pixel data (or, cut in a length field, as not DICOM at
    all), and the service's door called it 'modality missing'."""
    from echoscreen.dicom.header import read_header

    data = pydicom_file("examples_ybr_color.dcm").read_bytes()[:size]
    why = r"is truncated: it ends inside its DICOM header|its header cannot be parsed: it is trunc"
    with pytest.raises(DicomDecodeError, match=why):
        read_cine(data)
    with pytest.raises(DicomDecodeError, match=why):
        read_header(data)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_a_file_cut_inside_encapsulated_pixel_data_is_called_truncated(
    pydicom_file: Callable[[str], Path],
) -> None:
    """The whole read dropped the unfinished Pixel Data element, so the file seemed to
    have none ('it is not an image, or the file is truncated')."""
    from echoscreen.dicom.header import read_header

    data = pydicom_file("examples_ybr_color.dcm").read_bytes()
    with pytest.raises(DicomDecodeError, match="is truncated: it ends inside its pixel data"):
        read_cine(data[: len(data) // 2])
    header = read_header(data[: len(data) // 2])
    assert header.has_pixels and "PixelData" not in header.dataset
