# Declarations of src_c/fc_common.h for every kernel module: cimport from here, never redeclare.
cdef extern from "fc_common.h" nogil:
    ctypedef unsigned int fc_fpstate
    fc_fpstate fc_ftz_enter()
    void fc_ftz_leave(fc_fpstate old)
    int fc_team(int nthreads, Py_ssize_t tasks)
    int fc_budget_threads()
    int fc_budgeted_team(int nthreads, Py_ssize_t tasks)
