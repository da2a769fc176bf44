# Declarations of src_c/fc_isa.h (the compile target's vector width and tuning table): cimport
# from here, never redeclare.
cdef extern from "fc_isa.h" nogil:
    const char *FC_ISA_NAME
    int FC_WL
    int FC_MK_MR
    int FC_MK_NV_F32
