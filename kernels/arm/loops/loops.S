@ Known-count loops, one per instruction class of the Cortex-A9 cost model (costmodel.py).
@
@ Every loop has the same shape, so its executed instruction count is exact and known:
@     mb_NAME(r0 = iterations, r1 = 64-byte aligned scratch buffer of 256 bytes)
@     1:  BODY (8 instructions of the class, independent of each other where latency matters)
@         subs r0, r0, #1
@         bne  1b
@         bx   lr
@ => iterations * (8 + 2) + 1 instructions: 8n of the class, n int.alu (subs), n + 1 int.branch.
@ Run on a board and timed (calibrate.py) they give cycles per class; counted under qemu with
@ the plugin (tests/test_arm_emulation.py) they prove the counter exact.
@ Registers: r0-r3, r12 and q0-q3, q8-q15 only (the rest are callee-saved by the AAPCS).

	.syntax unified
	.arch armv7-a
	.fpu neon
	.text

	.macro LOOP name, mode=thumb
	.if \mode == 1
	.arm
	.else
	.thumb
	.thumb_func
	.endif
	.global mb_\name
	.type mb_\name, %function
	.p2align 4
mb_\name:
	.endm

	.macro END name
	subs r0, r0, #1
	bne 1b
	bx lr
	.size mb_\name, . - mb_\name
	.endm

@ ---- integer core ------------------------------------------------------------------------
	LOOP alu
1:	add r2, r2, #1
	add r3, r3, #1
	add r12, r12, #1
	eor r2, r2, r3
	add r2, r2, #1
	add r3, r3, #1
	add r12, r12, #1
	eor r3, r3, r12
	END alu

	LOOP alu_arm, 1
1:	add r2, r2, #1
	add r3, r3, #1
	add r12, r12, #1
	eor r2, r2, r3
	add r2, r2, #1
	add r3, r3, #1
	add r12, r12, #1
	eor r3, r3, r12
	END alu_arm

	LOOP mul
1:	mul r2, r2, r2
	mul r3, r3, r3
	mul r12, r12, r12
	mul r2, r2, r2
	mul r3, r3, r3
	mul r12, r12, r12
	mul r2, r2, r2
	mul r3, r3, r3
	END mul

	LOOP load
1:	ldr r2, [r1]
	ldr r3, [r1, #4]
	ldr r12, [r1, #8]
	ldr r2, [r1, #12]
	ldr r3, [r1, #16]
	ldr r12, [r1, #20]
	ldr r2, [r1, #24]
	ldr r3, [r1, #28]
	END load

	LOOP store
1:	str r2, [r1]
	str r3, [r1, #4]
	str r12, [r1, #8]
	str r2, [r1, #12]
	str r3, [r1, #16]
	str r12, [r1, #20]
	str r2, [r1, #24]
	str r3, [r1, #28]
	END store

	LOOP branch
1:	b 2f
2:	b 2f
2:	b 2f
2:	b 2f
2:	b 2f
2:	b 2f
2:	b 2f
2:	b 2f
2:	END branch

@ ---- VFP (scalar) --------------------------------------------------------------------------
	LOOP vfp_add
1:	vadd.f32 s0, s0, s8
	vadd.f32 s1, s1, s8
	vadd.f32 s2, s2, s8
	vadd.f32 s3, s3, s8
	vadd.f32 s4, s4, s8
	vadd.f32 s5, s5, s8
	vadd.f32 s6, s6, s8
	vadd.f32 s7, s7, s8
	END vfp_add

	LOOP vfp_mul
1:	vmul.f32 s0, s0, s8
	vmul.f32 s1, s1, s8
	vmul.f32 s2, s2, s8
	vmul.f32 s3, s3, s8
	vmul.f32 s4, s4, s8
	vmul.f32 s5, s5, s8
	vmul.f32 s6, s6, s8
	vmul.f32 s7, s7, s8
	END vfp_mul

	LOOP vfp_mla
1:	vmla.f32 s0, s8, s9
	vmla.f32 s1, s8, s9
	vmla.f32 s2, s8, s9
	vmla.f32 s3, s8, s9
	vmla.f32 s4, s8, s9
	vmla.f32 s5, s8, s9
	vmla.f32 s6, s8, s9
	vmla.f32 s7, s8, s9
	END vfp_mla

	LOOP vfp_div
1:	vdiv.f32 s0, s8, s9
	vdiv.f32 s1, s8, s9
	vdiv.f32 s2, s8, s9
	vdiv.f32 s3, s8, s9
	vdiv.f32 s4, s8, s9
	vdiv.f32 s5, s8, s9
	vdiv.f32 s6, s8, s9
	vdiv.f32 s7, s8, s9
	END vfp_div

	LOOP vfp_load
1:	vldr s0, [r1]
	vldr s1, [r1, #4]
	vldr s2, [r1, #8]
	vldr s3, [r1, #12]
	vldr s4, [r1, #16]
	vldr s5, [r1, #20]
	vldr s6, [r1, #24]
	vldr s7, [r1, #28]
	END vfp_load

@ ---- NEON (Advanced SIMD), 128-bit Q and 64-bit D forms --------------------------------------
	LOOP neon_fadd_q
1:	vadd.f32 q8, q8, q0
	vadd.f32 q9, q9, q0
	vadd.f32 q10, q10, q0
	vadd.f32 q11, q11, q0
	vadd.f32 q12, q12, q0
	vadd.f32 q13, q13, q0
	vadd.f32 q14, q14, q0
	vadd.f32 q15, q15, q0
	END neon_fadd_q

	LOOP neon_fmul_q
1:	vmul.f32 q8, q8, q0
	vmul.f32 q9, q9, q0
	vmul.f32 q10, q10, q0
	vmul.f32 q11, q11, q0
	vmul.f32 q12, q12, q0
	vmul.f32 q13, q13, q0
	vmul.f32 q14, q14, q0
	vmul.f32 q15, q15, q0
	END neon_fmul_q

	LOOP neon_fmla_q
1:	vmla.f32 q8, q0, q1
	vmla.f32 q9, q0, q1
	vmla.f32 q10, q0, q1
	vmla.f32 q11, q0, q1
	vmla.f32 q12, q0, q1
	vmla.f32 q13, q0, q1
	vmla.f32 q14, q0, q1
	vmla.f32 q15, q0, q1
	END neon_fmla_q

	LOOP neon_fmla_d
1:	vmla.f32 d16, d0, d1
	vmla.f32 d17, d0, d1
	vmla.f32 d18, d0, d1
	vmla.f32 d19, d0, d1
	vmla.f32 d20, d0, d1
	vmla.f32 d21, d0, d1
	vmla.f32 d22, d0, d1
	vmla.f32 d23, d0, d1
	END neon_fmla_d

	LOOP neon_int_q
1:	vadd.i32 q8, q8, q0
	vadd.i32 q9, q9, q0
	vadd.i32 q10, q10, q0
	vadd.i32 q11, q11, q0
	vadd.i32 q12, q12, q0
	vadd.i32 q13, q13, q0
	vadd.i32 q14, q14, q0
	vadd.i32 q15, q15, q0
	END neon_int_q

	LOOP neon_imul_q
1:	vmul.i16 q8, q8, q0
	vmul.i16 q9, q9, q0
	vmul.i16 q10, q10, q0
	vmul.i16 q11, q11, q0
	vmul.i16 q12, q12, q0
	vmul.i16 q13, q13, q0
	vmul.i16 q14, q14, q0
	vmul.i16 q15, q15, q0
	END neon_imul_q

	LOOP neon_load_2
1:	vld1.32 {d16, d17}, [r1:128]
	vld1.32 {d18, d19}, [r1:128]
	vld1.32 {d20, d21}, [r1:128]
	vld1.32 {d22, d23}, [r1:128]
	vld1.32 {d24, d25}, [r1:128]
	vld1.32 {d26, d27}, [r1:128]
	vld1.32 {d28, d29}, [r1:128]
	vld1.32 {d30, d31}, [r1:128]
	END neon_load_2

	LOOP neon_store_2
1:	vst1.32 {d16, d17}, [r1:128]
	vst1.32 {d18, d19}, [r1:128]
	vst1.32 {d20, d21}, [r1:128]
	vst1.32 {d22, d23}, [r1:128]
	vst1.32 {d24, d25}, [r1:128]
	vst1.32 {d26, d27}, [r1:128]
	vst1.32 {d28, d29}, [r1:128]
	vst1.32 {d30, d31}, [r1:128]
	END neon_store_2

@ A leaf called from a loop: proves that the counting region includes callees.
	LOOP call
1:	push {r0, lr}
	bl mb_leaf
	pop {r0, lr}
	add r2, r2, #1
	add r2, r2, #1
	add r2, r2, #1
	add r2, r2, #1
	add r2, r2, #1
	END call

	.thumb
	.thumb_func
	.global mb_leaf
	.type mb_leaf, %function
mb_leaf:
	add r3, r3, #1
	bx lr
	.size mb_leaf, . - mb_leaf

@ Fill s0-s15 (d0-d7) and q8-q15 with the 16 floats at r0 (all 1.0): not counted, not timed.
	.thumb
	.thumb_func
	.global mb_fill_regs
	.type mb_fill_regs, %function
mb_fill_regs:
	vld1.32 {d0-d3}, [r0]
	vld1.32 {d4-d7}, [r0]
	vld1.32 {d16-d19}, [r0]
	vld1.32 {d20-d23}, [r0]
	vld1.32 {d24-d27}, [r0]
	vld1.32 {d28-d31}, [r0]
	bx lr
	.size mb_fill_regs, . - mb_fill_regs

	.section .note.GNU-stack, "", %progbits
