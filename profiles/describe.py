"""A profile in readable Chinese, for operators checking what the service will enforce
(`hotline profile show NAME`)."""

from __future__ import annotations

from profiles import Profile

KIND_NAMES = {
    "emergency": "紧急事项", "legal_procedure": "法定程序事项", "outside_authority": "其他机关职权事项",
    "confidential": "涉密及隐私事项", "civil_dispute": "民事纠纷", "no_substance": "无实质内容或恶意骚扰",
    "out_of_jurisdiction": "非本辖区事项", "repeat": "重复诉求",
}
FACT_NAMES = {"content": "诉求内容", "event_time": "时间", "place": "地点", "phone": "联系电话", "name": "姓名",
              "id_number": "身份证号码"}
RATING_NAMES = {"very_satisfied": "非常满意", "satisfied": "满意", "basically_satisfied": "基本满意",
                "unsatisfied": "不满意", "very_unsatisfied": "非常不满意"}
AFTER_NAMES = {"expert_review": "启动专业评价", "revisit": "人工回访核实", "close": "办结"}


def _facts(names: tuple[str, ...]) -> str:
    return "、".join(FACT_NAMES[n] for n in names)


def describe(p: Profile) -> str:
    lines = [f"{p.name}（{p.id}）", f"依据：{p.document}", f"管辖范围：{p.region_display}（行政区划代码 {'、'.join(p.adcodes)}）", ""]
    start = "含签收当日" if p.count_start_day else "自派单的下一工作日起"
    lines.append(f"受理类型与办理时限（工作日，{start}计算，遇法定节假日顺延）：")
    for c in p.categories.values():
        lines.append(f"  · {c.label}：{c.limit_working_days}个工作日")
    if "praise" not in p.categories:
        lines.append("  · 表扬：本规定未列入受理类型，在线渠道致谢后不生成工单")
    lines.append(f"  · 派单时限：{p.dispatch_hours:g}小时内")
    if p.complex_limit_working_days:
        lines.append(f"  · 复杂事项：{p.complex_limit_working_days}个工作日（{p.complex_article or ''}）")
    lines.append("")
    lines.append("紧急诉求：")
    for rule in p.urgent_rules:
        lines.append(f"  · {rule.label}（{rule.article}）：{rule.citizen_note().split('：', 1)[1]}")
    lines.append("")
    lines.append(f"不予受理（{p.emergency_article} 紧急事项转 " + "、".join(s.number for s in p.emergency_services) + "）：")
    for kind, rule in p.screening.items():
        lines.append(f"  · {KIND_NAMES.get(kind, kind)}（{rule.article}）：{rule.message}")
    lines.append("")
    lines.append(f"必填信息：{_facts(p.required_facts['default'])}")
    for kind, names in p.required_facts.items():
        if kind != "default" and kind in p.categories:
            lines.append(f"  · {p.categories[kind].label}：{_facts(names)}")
    if p.real_name is None:
        lines.append("  · 姓名可不提供，尊重匿名")
    else:
        for rule in p.real_name.rules:
            lines.append(f"  · {rule.label}（{p.real_name.article}）：须提供{_facts(rule.facts)}，拒绝提供的不予受理")
    lines.append(f"  · 诉求人可要求保密（{p.confidentiality_article}），工单记录保密标记")
    lines.append("")
    w = p.withdrawal
    lines.append(f"撤回：{'可以撤回办理中的诉求' if w.allowed else '不可在线撤回'}（{w.article}）")
    lines.append(f"补充：{'补充新情况后重新计时' if w.supplement_restarts_clock else '补充新情况不重新计时'}（{w.supplement_article}）")
    lines.append(f"重复诉求：同一联系人、同类、同地点且内容相似的并入原工单；超过{p.repeats.escalate_after}次重复的提请督办（{p.repeats.article}）")
    a = p.abuse
    lines.append(
        f"骚扰限制（{a.article}）：{a.flood_window_s}秒内超过{a.flood_messages}条，或{a.strikes}次侮辱骚扰，"
        f"限制{a.limit_hours:g}小时，留言照常保存"
    )
    lines.append("")
    s = p.survey
    quiet = f"{s.quiet_hours[0]}:00至{s.quiet_hours[1]}:00不发送" if s.quiet_hours else "不设免打扰时段"
    redo = (f"重办时限延长{s.redo_extra_working_days}个工作日" if s.redo_extra_working_days
            else "重办时限不延长")
    lines.append(
        f"满意度回访（{s.article}）：答复后{s.send_within_working_days}个工作日内短信回访，{quiet}；"
        f"{s.window_hours:g}小时未回复视为{RATING_NAMES[s.default_rating]}；"
        f"{'可更正评价' if s.allow_correction else '不可更正评价'}；不满意退回重办（{redo}，最多{s.max_redos}次），"
        f"之后{AFTER_NAMES[s.after_last_redo]}"
    )
    return "\n".join(lines)
