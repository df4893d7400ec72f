// One PTX module from several that the NVPTX backend emitted separately (one
// per kernel, compiled on parallel threads), because the driver and ptxas
// take one whole-program module per load. Only the shapes moejit's kernels
// have are merged; anything else is refused and the caller compiles the
// kernels as one module instead.
#pragma once

#include <string>
#include <vector>

namespace moejit {

// The first module's header (.version, .target, .address_size), then every
// module's body in order. A module-scope `.extern` declaration that an
// earlier module already made word for word (the dynamic shared memory) is
// kept once. Returns false and says why in `why` when the headers differ, a
// module has module-scope statements other than kernel entries (`.entry`
// and its directives) and `.extern` declarations, two `.extern`s name one
// symbol differently, or two modules define one kernel.
bool mergePtxModules(const std::vector<std::string> &modules, std::string &merged,
                     std::string &why);

} // namespace moejit
