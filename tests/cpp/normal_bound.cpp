// Exhaustive check of lorafusion::kNormalMaxAbs: every 24-bit uniform pair of normal4 gives a
// radius and a sine/cosine whose product stays below the bound. Exit status 0 when it holds.
#include <lorafusion/philox.h>

#include <cmath>
#include <cstdio>

int main() {
  using namespace lorafusion;
  float max_rad = 0.0f, max_trig = 0.0f;
  for (uint32_t v = 0; v < (1u << 24); ++v) {
    const float u1 = static_cast<float>(v + 1u) * 5.9604644775390625e-8f;
    const float rad = __builtin_sqrtf(-2.0f * lf_log(u1));
    max_rad = std::fmax(max_rad, rad);
    const float u2 = static_cast<float>(v) * 5.9604644775390625e-8f;
    float s, c;
    lf_sincos_turns(u2, &s, &c);
    max_trig = std::fmax(max_trig, std::fmax(std::fabs(s), std::fabs(c)));
  }
  const float worst = max_rad * max_trig;
  std::printf("max radius %.9g, max |sin|,|cos| %.9g, max |normal| %.9g, bound %.9g\n", max_rad,
              max_trig, worst, kNormalMaxAbs);
  return worst <= kNormalMaxAbs ? 0 : 1;
}
