"""The CUDA GPUs this process can see, asked of the NVIDIA driver itself (libcuda), so that a command refuses
``--device cuda`` on a machine without one before it imports torch (which takes seconds, a minute under load)."""
import ctypes
import ctypes.util

DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
CUDA_SUCCESS = 0


def cuda_device_count():
    """The CUDA devices the driver shows this process (CUDA_VISIBLE_DEVICES applies); 0 without a driver."""
    for name in (*DRIVER_LIBRARIES, ctypes.util.find_library("cuda")):
        if not name:
            continue
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != CUDA_SUCCESS or driver.cuDeviceGetCount(ctypes.byref(count)) != CUDA_SUCCESS:
            return 0
        return count.value
    return 0
